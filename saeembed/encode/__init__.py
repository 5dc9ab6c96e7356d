"""Corpus → reader → SAE → pooled sparse rows → atomic Parquet shards → one DuckDB transaction.

:func:`encode_corpus` runs three steps: :mod:`.plan` (validate, resolve models, decide what is
left to do), :mod:`.run` (encode the pending shards into the work folder) and :mod:`.ingest` (store
the corpus in one transaction). Crash safety: each finished shard is written atomically to
``STORE.work/<name>-<digest>/``, so a rerun of the same command skips finished shards and produces
exactly the rows of an uninterrupted run; only when every shard exists does the corpus enter the
store, so the store never holds a partial corpus.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..corpus import describe_rows, describe_source
from ..errors import UserError
from ..options import resolve
from ..store.handle import registry_row
from .options import EncodeOptions
from .progress import store_bytes, summary_line
from .workdir import prepare_manifest

log = logging.getLogger(__name__)

# Heavy parts (torch, the reader) load on first use, so `import saeembed.cli` stays light.
_LAZY = {"ShardWork": "run", "encode_shard": "run", "run_shards": "run", "tokenise_shard": "run",
         "pool_windows": "pool", "combine_windows": "pool", "ACT_SCHEMA": "pool",
         "EncodeSettings": "plan", "EncodePlan": "plan"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def encode_corpus(store_path: str | Path, corpus: Any, name: str, options: EncodeOptions | None = None,
                  **kwargs: Any) -> dict[str, Any]:
    """Encode a corpus into the store; resumable; returns the corpus' registry row.

    ``corpus`` is a file path (parquet/csv/tsv/jsonl/json/txt or a folder of .txt), ``"-"`` for JSONL
    on stdin, or data in memory: a polars or pandas DataFrame, a list of strings, a Hugging Face
    ``datasets.Dataset``. Options: :class:`~saeembed.encode.options.EncodeOptions` (as an object or
    as keywords); ``wait`` is how long to wait for other processes to release the store.
    """
    from .ingest import ingest
    from .plan import EncodePlan, claimed, load_reader, pending_shards, request_for, settings_for

    opts = resolve(EncodeOptions, options, kwargs, "encode_corpus")
    if opts.keep == "parquet":
        import os

        from ..store.parquet import location_for

        where = location_for(store_path, opts.parquet_dir)  # refuse a bad --parquet-dir before any work
        existing = next(p for p in (where, *where.parents) if p.exists())
        if not os.access(existing, os.W_OK):
            raise UserError(f"cannot write the Parquet files into {where}: {existing} is read-only or not writable by "
                            "this user; pass a --parquet-dir you may write to")
    if opts.devices is not None and (opts.ray is not None or opts.ray_workers is not None):
        raise UserError("--devices starts a local Ray cluster with one actor per listed device, so it does not "
                        "combine with --ray (a cluster's own devices) or --ray-workers; pass one or the other")
    if opts.ray is not None or opts.devices is not None:
        from .distributed import encode_corpus_ray

        return encode_corpus_ray(store_path, corpus, name, opts)
    if opts.work_dir is not None or opts.ray_workers is not None:
        raise UserError("--work-dir and --ray-workers apply to Ray runs; add --ray auto (or --devices)")
    req = request_for(store_path, corpus, name, opts)
    with claimed(req, opts) as stored:
        if stored:
            return registry_row(req.store_path, req.name)
        rdr = load_reader(opts, req.loaded, req.layer)
        settings = settings_for(opts, rdr, req.loaded, req.corpus)
        prepare_manifest(req.work_dir, settings.as_dict())
        n_shards, pending = pending_shards(req.work_dir, req.corpus.n_docs, opts.shard_docs)
        plan = EncodePlan(req.store_path, req.name, req.corpus, req.loaded, rdr, settings, req.work_dir, n_shards,
                          pending)
        size_before = store_bytes(req.store_path)
        tokens, seconds = _run(plan, opts)
        row = ingest(plan, wait=opts.wait, keep=opts.keep, parquet_dir=opts.parquet_dir)
    log.info(summary_line(req.name, row, tokens, seconds, store_bytes(req.store_path) - size_before, req.store_path))
    return row


def _run(plan: Any, opts: EncodeOptions) -> tuple[int, float]:
    """Encode the pending shards; returns (content tokens encoded, seconds)."""
    from .plan import size_estimate
    from .run import run_shards

    s, cfg = plan.settings, plan.loaded.sae.cfg
    log.info("encoding %d documents of %s (%s) as %r: reader %s layer %d, SAE %s (d_sae %d), device %s %s",
             plan.corpus.n_docs, describe_source(plan.corpus.source), describe_rows(plan.corpus), plan.name, s.reader,
             s.layer, s.sae, cfg.d_sae, plan.reader.device, s.dtype)
    if plan.done_docs:
        log.info("resuming: %d of %d shards already done", plan.n_shards - len(plan.pending), plan.n_shards)
    if not plan.pending:
        return 0, 0.0
    sae = plan.loaded.sae.to(plan.reader.device)
    return run_shards(plan.reader, sae, plan.corpus, plan.work_dir, plan.pending, shard_docs=s.shard_docs,
                      batch_tokens=s.batch_tokens, done_docs=plan.done_docs, progress=opts.progress,
                      size_estimate=lambda per_doc: size_estimate(plan.corpus, per_doc))


__all__ = ["encode_corpus", "EncodeOptions", "EncodeSettings", "EncodePlan", "ShardWork", "encode_shard",
           "tokenise_shard", "pool_windows", "combine_windows", "ACT_SCHEMA", "run_shards"]
