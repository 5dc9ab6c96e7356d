"""The DuckDB catalog: schema, corpus registry, ingest of encoded shards, read-only SQL.

One store holds many corpora. ``doc_id = corpus_id << 32 | row_idx``: stable, derivable from the
source row, and unique across corpora, so analyses join on integers and re-ingesting a corpus can
never collide with another one.

Tables (``activations`` keeps only non-zeros):

- ``corpora(corpus_id, name, source, n_docs, reader, layer, sae, pooling, created_at, n_tokens, config)``
- ``documents(doc_id, corpus_id, row_idx, text, n_tokens, meta, token_ends)`` — where each pooled
  token ends in the text (token ``i`` covers ``[token_ends[i - 1], token_ends[i])``; NULL where the
  corpus was stored without them)
- ``saes(sae, d_in, d_sae, activation, k, reader, layer, hook_name, path)``
- ``features(sae, feature_id, label, label_source, score, density, description)`` — one row per
  (latent, label source); several sources may label one latent.
- ``activations(doc_id, feature_id, value, total, n_active, peak_pos)`` — ``value`` is the max over
  the document's pooled tokens, ``total`` the sum, ``n_active`` the number of tokens where the
  latent fired; mean pooling is ``total / documents.n_tokens``. ``peak_pos`` is the (first) pooled
  token where the latent reaches ``value`` (0-based, indexes ``token_ends``), so views mark it
  without re-running the reader.
"""

from ..ids import doc_id  # re-exported for scripts
from .catalog import StoreReader
from .connection import DEFAULT_WAIT_S, check_store_file, connect, lock_wait_seconds
from .schema import CONTEXT_LABEL_SOURCE, LABEL_FLOOR, OFFLINE_LABEL_SOURCE, SCHEMA
from .write import ingest_corpus, next_corpus_id, register_sae, transaction

__all__ = ["CONTEXT_LABEL_SOURCE", "DEFAULT_WAIT_S", "LABEL_FLOOR", "OFFLINE_LABEL_SOURCE", "SCHEMA", "StoreReader",
           "check_store_file", "connect", "doc_id", "ingest_corpus", "lock_wait_seconds", "next_corpus_id",
           "register_sae", "transaction"]
