"""The store's tables, and the constants every part of the store agrees on."""

from __future__ import annotations

from ..labelrule import CONTEXT_LABEL_SOURCE, LABEL_FLOOR, OFFLINE_LABEL_SOURCE  # noqa: F401 - re-exported
from .parquet import SCHEMA as LAYOUT_SCHEMA
from .stats import SCHEMA as STATS_SCHEMA
from .strata import SCHEMA as STRATA_SCHEMA

SCHEMA = """
CREATE TABLE IF NOT EXISTS corpora (
    corpus_id INTEGER PRIMARY KEY,
    name TEXT UNIQUE NOT NULL,
    source TEXT,
    n_docs BIGINT,
    reader TEXT,
    layer INTEGER,
    sae TEXT,
    pooling TEXT,
    created_at TIMESTAMP DEFAULT current_timestamp,
    n_tokens BIGINT,
    config JSON
);
CREATE TABLE IF NOT EXISTS documents (
    doc_id BIGINT PRIMARY KEY,
    corpus_id INTEGER NOT NULL,
    row_idx BIGINT NOT NULL,
    text TEXT,
    n_tokens INTEGER,
    meta JSON,
    token_ends INTEGER[]
);
CREATE TABLE IF NOT EXISTS saes (
    sae TEXT PRIMARY KEY,
    d_in INTEGER,
    d_sae INTEGER,
    activation TEXT,
    k INTEGER,
    reader TEXT,
    layer INTEGER,
    hook_name TEXT,
    path TEXT
);
CREATE TABLE IF NOT EXISTS features (
    sae TEXT NOT NULL,
    feature_id INTEGER NOT NULL,
    label TEXT,
    label_source TEXT NOT NULL,
    score DOUBLE,
    density DOUBLE,
    description TEXT,
    PRIMARY KEY (sae, feature_id, label_source)
);
CREATE TABLE IF NOT EXISTS activations (
    doc_id BIGINT NOT NULL,
    feature_id INTEGER NOT NULL,
    value FLOAT NOT NULL,
    total FLOAT,
    n_active INTEGER,
    peak_pos INTEGER
);
"""

# Columns later versions added, for stores created before them (run by every writing connection;
# a no-op once present). Rows of corpora stored before have NULL there.
MIGRATIONS = """
ALTER TABLE documents ADD COLUMN IF NOT EXISTS token_ends INTEGER[];
ALTER TABLE activations ADD COLUMN IF NOT EXISTS peak_pos INTEGER;
"""

# every table of a store: the catalog above, per-corpus latent statistics and length strata, Parquet-kept
# activations
ALL_SCHEMAS = (SCHEMA, STATS_SCHEMA, STRATA_SCHEMA, LAYOUT_SCHEMA)

DUCKDB_MAGIC = b"DUCK"  # bytes 8..11 of every DuckDB database file
