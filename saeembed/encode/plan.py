"""Decide what an encode will do before any model runs: the layer, the reader, whether the corpus
is already stored, the recorded settings and the shards still to compute.

Every refusal here is a one-line :class:`UserError` raised before work starts (a name used with
another reader or SAE, a layer the SAE does not read, an SAE whose width does not fit the reader).
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .. import store as store_mod
from ..corpus import Corpus
from ..errors import UserError
from ..names import check_corpus_name
from ..reader import Reader, make_reader, resolve_reader
from ..sae import LoadedSAE, open_sae
from ..uri import read_corpus_any
from .options import EncodeOptions
from .workdir import act_path, remove_work_dir, work_dir, work_lock

log = logging.getLogger(__name__)

BYTES_PER_NONZERO = 14  # measured: DuckDB (doc_id, feature_id, value, total, n_active) after compression
POOLINGS = "max+sum+count"


@dataclass
class EncodeSettings:
    """Everything that changes the rows produced; recorded with the corpus and the work manifest."""

    reader: str
    layer: int
    sae: str
    chat_template: bool
    include_special: bool
    window: int
    batch_tokens: int
    shard_docs: int
    dtype: str
    corpus_fingerprint: str
    n_docs: int
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class EncodePlan:
    """What :func:`saeembed.encode.encode_corpus` runs: the models, the settings and the pending shards."""

    store_path: Path
    name: str
    corpus: Corpus
    loaded: LoadedSAE
    reader: Reader
    settings: EncodeSettings
    work_dir: Path
    n_shards: int
    pending: list[int]

    @property
    def done_docs(self) -> int:
        n, size = self.corpus.n_docs, self.settings.shard_docs
        return n - sum(min(size, n - s * size) for s in self.pending)


@dataclass
class EncodeRequest:
    """The checked inputs every encode (local or on Ray) starts from, before any model loads."""

    store_path: Path
    name: str
    corpus: Corpus
    loaded: LoadedSAE
    layer: int
    work_dir: Path


def request_for(store_path: str | Path, corpus: Any, name: str, opts: EncodeOptions) -> EncodeRequest:
    """Check the name, read the corpus, open the SAE and resolve its layer: the refusals that must
    come before any work, shared by both encode paths so they cannot drift apart."""
    name = check_corpus_name(name)
    store_path = Path(store_path)
    docs = read_corpus_any(corpus, text_col=opts.text_col, messages_col=opts.messages_col,
                           drop_empty=opts.drop_empty, limit=opts.limit, where=opts.where)
    loaded = open_sae(opts.sae or "default")
    layer = resolve_layer(loaded, opts.layer)
    return EncodeRequest(store_path, name, docs, loaded, layer, work_dir(store_path, name))


@contextmanager
def claimed(req: EncodeRequest, opts: EncodeOptions) -> Iterator[bool]:
    """Hold the corpus' work lock; yields True when the same corpus is already stored (its stale work
    folder is then deleted and there is nothing to do), False when the caller must encode it."""
    with work_lock(req.work_dir, f"corpus {req.name!r} into {req.store_path}"):
        if already_stored(req.store_path, req.name, req.corpus, req.loaded, reader_name_for(opts, req.loaded),
                          req.layer, opts.wait):
            remove_work_dir(req.work_dir, req.store_path)
            log.info("corpus %r is already encoded in %s with these settings; nothing to do", req.name,
                     req.store_path)
            yield True
        else:
            yield False


def resolve_layer(loaded: LoadedSAE, layer: int | None) -> int:
    """The block the SAE reads: its recorded layer, which an explicit ``--layer`` must agree with."""
    recorded = loaded.sae.cfg.hook_layer
    if layer is None:
        if recorded is None:
            raise UserError(f"SAE {loaded.sae_id} does not record which layer it reads; pass --layer")
        return recorded
    if recorded is not None and layer != recorded:
        raise UserError(f"SAE {loaded.sae_id} reads layer {recorded} but --layer {layer} was given; "
                        f"drop --layer or pass the SAE trained on layer {layer}")
    return layer


def existing_corpus(store_path: Path, name: str, wait: float | None) -> dict[str, Any] | None:
    """The registry row of corpus ``name`` if the store has it (read-only: never blocks other readers)."""
    if not store_mod.check_store_file(store_path):
        return None
    con = store_mod.connect(store_path, read_only=True, wait=wait)
    try:
        rows = con.execute("SELECT name, reader, layer, sae, config FROM corpora WHERE name = ?", [name]).fetchall()
    finally:
        con.close()
    if not rows:
        return None
    row = rows[0]
    return {"name": row[0], "reader": row[1], "layer": row[2], "sae": row[3], "config": json.loads(row[4] or "{}")}


def already_stored(store_path: Path, name: str, corpus: Corpus, loaded: LoadedSAE, reader_name: str, layer: int,
                   wait: float | None) -> bool:
    """True when the same corpus is stored under ``name`` with the same reader, layer and SAE; refuses a
    name that another corpus or other models already use."""
    existing = existing_corpus(store_path, name, wait)
    if existing is None:
        return False
    same = (existing["reader"], existing["layer"], existing["sae"]) == (reader_name, layer, loaded.sae_id)
    if same and existing["config"].get("corpus_fingerprint") == corpus.fingerprint:
        return True
    raise UserError(
        f"corpus name {name!r} is already used in {store_path} (reader {existing['reader']}, layer "
        f"{existing['layer']}, SAE {existing['sae']}); choose another --name or `saeembed drop {name}`"
    )


def reader_name_for(opts: EncodeOptions, loaded: LoadedSAE) -> str:
    cfg = loaded.sae.cfg
    if opts.loaded_reader is not None:
        return opts.loaded_reader.name
    if opts.reader is None and not cfg.model_name:
        raise UserError(f"SAE {loaded.sae_id} does not record its reader model; pass --reader")
    return resolve_reader(opts.reader or cfg.model_name)[0]


def load_reader(opts: EncodeOptions, loaded: LoadedSAE, layer: int) -> Reader:
    """The reader the SAE fits (``opts.loaded_reader`` when given), cut after ``layer``."""
    rdr = opts.loaded_reader or make_reader(opts.reader or loaded.sae.cfg.model_name, layer=layer,
                                            device=opts.device, dtype=opts.dtype, chat_template=opts.chat_template,
                                            include_special=opts.include_special, window=opts.window,
                                            prefix_cache=opts.prefix_cache)
    if rdr.layer != layer:
        raise UserError(f"the given reader is cut at layer {rdr.layer}, the SAE needs layer {layer}")
    try:
        loaded.sae.check_reader(rdr.hidden_size, rdr.name)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return rdr


def settings_for(opts: EncodeOptions, rdr: Reader, loaded: LoadedSAE, corpus: Corpus) -> EncodeSettings:
    return EncodeSettings(
        reader=rdr.name, layer=rdr.layer, sae=loaded.sae_id, chat_template=rdr.chat_template,
        include_special=rdr.include_special, window=rdr.window, batch_tokens=opts.batch_tokens,
        shard_docs=opts.shard_docs, dtype=str(rdr.dtype).replace("torch.", ""),
        corpus_fingerprint=corpus.fingerprint, n_docs=corpus.n_docs,
        extra={"text_col": opts.text_col, "messages_col": opts.messages_col, "kind": corpus.kind,
               "column": corpus.column, "where": corpus.where,
               # whether the shared-prefix cache produced the rows (equal to the full forward within
               # the reader's self-checked tolerance, not bit for bit), so a resume cannot mix the two
               "prefix_cache": not rdr.prefix_cache_off_because},
    )


def pending_shards(work_dir: Path, n_docs: int, shard_docs: int) -> tuple[int, list[int]]:
    n_shards = (n_docs + shard_docs - 1) // shard_docs
    return n_shards, [s for s in range(n_shards) if not act_path(work_dir, s).exists()]


def size_estimate(corpus: Corpus, nonzeros_per_doc: float) -> str:
    """The store's growth predicted from the non-zeros per document of the first batch and the
    corpus' text size (the summary at the end gives the real figure)."""
    col = "messages" if corpus.kind == "messages" else "text"
    text_bytes = float(corpus.docs[col].str.len_bytes().sum())
    est = corpus.n_docs * nonzeros_per_doc * BYTES_PER_NONZERO + text_bytes * 0.5 + corpus.n_docs * 40
    return f"estimated size on disk: {est / 1e6:.1f} MB (≈{nonzeros_per_doc:.0f} latents per document over " \
           f"{corpus.n_docs} documents, from the first batch)"


__all__ = ["EncodeSettings", "EncodePlan", "EncodeRequest", "request_for", "claimed", "resolve_layer",
           "already_stored", "load_reader", "settings_for", "pending_shards", "size_estimate", "reader_name_for",
           "BYTES_PER_NONZERO", "POOLINGS"]
