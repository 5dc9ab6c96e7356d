"""Corpus → reader → SAE → pooled sparse rows → atomic Parquet shards → one DuckDB transaction.

Crash safety: documents are split into fixed shards (``shard_docs`` consecutive rows). Each
finished shard is written to ``<store>.work/<name>/`` with write-to-temp + rename, so a shard file
either exists whole or not at all. Re-running the same command skips finished shards; because a
shard's batches depend only on its own documents and the recorded settings, a resumed run
produces exactly the rows of an uninterrupted one. Only when every shard exists is the corpus
ingested into the store, in one transaction, so the store never holds a partial corpus.

Overlap: a background thread tokenises and pads the next shard while the model runs, and another
writes finished shards, so the model is the only thing on the critical path.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import polars as pl
import torch

from . import store as store_mod
from .corpus import Corpus, read_corpus
from .errors import UserError
from .names import check_corpus_name, remove_work_dir, work_lock
from .names import work_dir as work_dir_of
from .reader import Reader, Window, batches_by_budget, pad_batch, resolve_reader
from .sae import LoadedSAE, SparseAutoencoder, open_sae

ACT_SCHEMA = {"row_idx": pl.Int64, "feature_id": pl.Int32, "value": pl.Float32,
              "total": pl.Float32, "n_active": pl.Int32}
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


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------- pooling ----
@torch.inference_mode()
def pool_windows(sae: SparseAutoencoder, hidden: torch.Tensor, pool: torch.Tensor) -> dict[str, np.ndarray]:
    """Max / sum / count of SAE latents over each window's pooled tokens, as sparse triples.

    Works in row groups and token chunks so memory stays bounded even for 65k-wide SAEs.
    Returns arrays ``row`` (window index in the batch), ``feature_id``, ``value`` (max),
    ``total`` (sum), ``n_active`` (tokens where the latent fired).
    """
    pool = pool.to(hidden.device)
    d_sae = sae.d_sae
    rows_per_group = max(1, (1 << 22) // d_sae)
    tokens_per_chunk = max(64, (1 << 24) // d_sae)
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("row", "feature_id", "value", "total", "n_active")}
    lengths = pool.sum(1)
    for g0 in range(0, hidden.shape[0], rows_per_group):
        h = hidden[g0:g0 + rows_per_group]
        m = pool[g0:g0 + rows_per_group]
        flat = h[m]  # [N, d_in], row-major so each row's tokens are contiguous
        seg = torch.repeat_interleave(torch.arange(h.shape[0], device=h.device), lengths[g0:g0 + rows_per_group])
        vmax = torch.zeros(h.shape[0], d_sae, device=h.device, dtype=torch.float32)
        vsum = torch.zeros_like(vmax)
        vcnt = torch.zeros_like(vmax)
        for c0 in range(0, flat.shape[0], tokens_per_chunk):
            x = flat[c0:c0 + tokens_per_chunk]
            s = seg[c0:c0 + tokens_per_chunk]
            sparse = sae.encode_sparse(x)
            if sparse is not None:  # TopK: reduce k values per token instead of d_sae
                vals, idx = sparse
                flat_idx = (s.unsqueeze(1) * d_sae + idx).reshape(-1)
                v = vals.float().reshape(-1)
                vmax.view(-1).scatter_reduce_(0, flat_idx, v, "amax", include_self=True)
                vsum.view(-1).index_add_(0, flat_idx, v)
                vcnt.view(-1).index_add_(0, flat_idx, (v > 0).float())
                continue
            a = sae.encode(x).float()
            with warnings.catch_warnings():  # "index_reduce is in beta": it is exact, and the fastest segment max
                warnings.simplefilter("ignore")
                vmax.index_reduce_(0, s, a, "amax", include_self=True)
            vsum.index_add_(0, s, a)
            vcnt.index_add_(0, s, (a > 0).float())
        nz = vmax.nonzero(as_tuple=True)
        out["row"].append((nz[0] + g0).cpu().numpy().astype(np.int64))
        out["feature_id"].append(nz[1].cpu().numpy().astype(np.int32))
        out["value"].append(vmax[nz].cpu().numpy())
        out["total"].append(vsum[nz].cpu().numpy())
        out["n_active"].append(vcnt[nz].cpu().numpy().astype(np.int32))
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in out.items()}


def combine_windows(parts: list[pl.DataFrame]) -> pl.DataFrame:
    """Windows of one document → one row per (document, latent): max of maxima, sums of sums."""
    if not parts:
        return pl.DataFrame(schema=ACT_SCHEMA)
    df = pl.concat(parts)
    return (
        df.group_by("row_idx", "feature_id")
        .agg(pl.col("value").max(), pl.col("total").sum(), pl.col("n_active").sum())
        .sort("row_idx", "feature_id")
        .cast(ACT_SCHEMA)
    )


# ---------------------------------------------------------------------------------- shards -----
def _atomic_parquet(df: pl.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    df.write_parquet(tmp, compression="zstd")
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _act_path(work: Path, shard: int) -> Path:
    return work / f"acts-{shard:06d}.parquet"


def _docs_path(work: Path, shard: int) -> Path:
    return work / f"docs-{shard:06d}.parquet"


def _prepare_workdir(work: Path, settings: EncodeSettings) -> None:
    manifest = work / "manifest.json"
    wanted = settings.as_dict()
    if manifest.exists():
        have = json.loads(manifest.read_text())
        if have != wanted:
            diff = sorted(k for k in set(have) | set(wanted) if have.get(k) != wanted.get(k))
            raise UserError(
                f"an unfinished encode in {work} used other settings ({', '.join(diff)}); re-run it with "
                f"the same arguments to resume, or delete {work} to start over"
            )
        return
    work.mkdir(parents=True, exist_ok=True)
    tmp = work / ".manifest.json.tmp"
    tmp.write_text(json.dumps(wanted, indent=2))
    os.replace(tmp, manifest)


@dataclass
class _ShardWork:
    shard: int
    row_idx: np.ndarray  # source row of each document in the shard
    windows: list[Window]
    batches: list[tuple[list[Window], torch.Tensor, torch.Tensor, torch.Tensor]]
    n_tokens: np.ndarray  # pooled tokens per document

    @property
    def total_tokens(self) -> int:
        return int(sum(len(w.ids) for w in self.windows))


def _doc_inputs(corpus: Corpus, rows: slice) -> list[Any]:
    col = "messages" if corpus.kind == "messages" else "text"
    values = corpus.docs[col][rows].to_list()
    return [json.loads(v) for v in values] if corpus.kind == "messages" else values


def _tokenise_shard(reader: Reader, corpus: Corpus, shard: int, shard_docs: int, batch_tokens: int) -> _ShardWork:
    rows = slice(shard * shard_docs, min((shard + 1) * shard_docs, corpus.n_docs))
    docs = _doc_inputs(corpus, rows)
    windows = [w for i, d in enumerate(docs) for w in reader.windows(d, i)]
    n_tokens = np.zeros(len(docs), dtype=np.int64)
    for w in windows:
        n_tokens[w.doc] += w.n_pooled
    batches = [(b, *pad_batch(b, reader.pad_id)) for b in batches_by_budget(windows, batch_tokens)]
    row_idx = corpus.docs["row_idx"][rows].to_numpy()
    return _ShardWork(shard, row_idx, windows, batches, n_tokens)


def _prefetch(fn: Callable[[int], _ShardWork], shards: list[int], depth: int = 2) -> Iterator[_ShardWork]:
    """Tokenise upcoming shards in a thread (HF fast tokenisers release the GIL)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def run() -> None:
        try:
            for s in shards:
                if stop.is_set():
                    return
                q.put(fn(s))
        except BaseException as exc:  # surface tokenisation errors in the main thread
            q.put(exc)
            return
        q.put(None)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def encode_shard(reader: Reader, sae: SparseAutoencoder, work: _ShardWork,
                 on_batch: Callable[[int], None] | None = None) -> pl.DataFrame:
    """Run one shard through reader and SAE; returns its pooled non-zeros per document."""
    parts: list[pl.DataFrame] = []
    for windows, ids, attn, pool in work.batches:
        hidden = reader.hidden_states(ids, attn)
        res = pool_windows(sae, hidden, pool)
        doc_of_row = np.array([w.doc for w in windows], dtype=np.int64)
        parts.append(pl.DataFrame({
            "row_idx": work.row_idx[doc_of_row[res["row"]]] if len(res["row"]) else np.zeros(0, np.int64),
            "feature_id": res["feature_id"], "value": res["value"],
            "total": res["total"], "n_active": res["n_active"],
        }, schema=ACT_SCHEMA))
        if on_batch:
            on_batch(int(attn.sum()))
    return combine_windows(parts)


# ---------------------------------------------------------------------------------- driver -----
def _existing_corpus(store_path: Path, name: str, wait: float | None) -> dict[str, Any] | None:
    """The registry row of corpus ``name`` if the store has it (read-only: never blocks other readers)."""
    if not store_mod.check_store_file(store_path):
        return None
    con = store_mod.connect(store_path, read_only=True, wait=wait)
    try:
        row = con.execute("SELECT name, reader, layer, sae, config FROM corpora WHERE name = ?", [name]).fetchone()
    finally:
        con.close()
    if row is None:
        return None
    return {"name": row[0], "reader": row[1], "layer": row[2], "sae": row[3], "config": json.loads(row[4] or "{}")}


def _registry_row(store_path: Path, name: str) -> dict[str, Any]:
    con = store_mod.connect(store_path, read_only=True)
    try:
        return store_mod.StoreReader(con).corpus(name)
    finally:
        con.close()


def _estimate_size(reader: Reader, sae: SparseAutoencoder, corpus: Corpus, batch_tokens: int) -> str:
    """Pilot-encode a few evenly spaced documents to predict the store's growth."""
    n = corpus.n_docs
    picks = sorted(set(np.linspace(0, n - 1, num=min(4, n)).astype(int).tolist()))
    sample = Corpus(corpus.source, corpus.docs[picks], corpus.kind, corpus.fingerprint)
    work = _tokenise_shard(reader, sample, 0, len(picks), batch_tokens)
    nnz = encode_shard(reader, sae, work).height / len(picks)
    col = "messages" if corpus.kind == "messages" else "text"
    text_bytes = corpus.docs[col].str.len_bytes().sum()
    est = n * nnz * BYTES_PER_NONZERO + text_bytes * 0.5 + n * 40
    return f"{est / 1e6:.1f} MB (≈{nnz:.0f} latents per document over {n} documents)"


def encode_corpus(
    store_path: str | Path,
    corpus_path: str | Path,
    name: str,
    *,
    text_col: str | None = None,
    messages_col: str | None = None,
    reader: str | None = None,
    layer: int | None = None,
    sae: str | None = "default",
    device: str = "auto",
    dtype: str | None = None,
    chat_template: bool | None = None,
    include_special: bool = False,
    window: int | None = None,
    batch_tokens: int = 4096,
    shard_docs: int = 256,
    drop_empty: bool = False,
    limit: int | None = None,
    progress: bool = True,
    loaded_reader: Reader | None = None,
    wait: float | None = None,
) -> dict[str, Any]:
    """Encode a corpus into the store; resumable; returns the corpus' registry row.

    ``wait``: seconds to wait for other processes to release the store before the final ingest
    (default ``SAEEMBED_WAIT`` or 120 s).
    """
    name = check_corpus_name(name)
    store_path = Path(store_path)
    corpus = read_corpus(corpus_path, text_col=text_col, messages_col=messages_col,
                         drop_empty=drop_empty, limit=limit)
    loaded: LoadedSAE = open_sae(sae or "default")
    cfg = loaded.sae.cfg
    if layer is None:
        if cfg.hook_layer is None:
            raise UserError(f"SAE {loaded.sae_id} does not record which layer it reads; pass --layer")
        layer = cfg.hook_layer
    elif cfg.hook_layer is not None and layer != cfg.hook_layer:
        raise UserError(f"SAE {loaded.sae_id} reads layer {cfg.hook_layer} but --layer {layer} was given; "
                        f"drop --layer or pass the SAE trained on layer {layer}")

    work_dir = work_dir_of(store_path, name)
    with work_lock(work_dir, f"corpus {name!r} into {store_path}"):
        existing = _existing_corpus(store_path, name, wait)
        if loaded_reader is None and reader is None and not cfg.model_name:
            raise UserError(f"SAE {loaded.sae_id} does not record its reader model; pass --reader")
        reader_name = loaded_reader.name if loaded_reader else resolve_reader(reader or cfg.model_name)[0]
        if existing is not None:
            same = (existing["reader"], existing["layer"], existing["sae"]) == (reader_name, layer, loaded.sae_id)
            if same and existing["config"].get("corpus_fingerprint") == corpus.fingerprint:
                remove_work_dir(work_dir, store_path)
                _log(f"corpus {name!r} is already encoded in {store_path} with these settings; nothing to do")
                return _registry_row(store_path, name)
            raise UserError(
                f"corpus name {name!r} is already used in {store_path} (reader {existing['reader']}, layer "
                f"{existing['layer']}, SAE {existing['sae']}); choose another --name or `saeembed drop {name}`"
            )

        rdr = loaded_reader or Reader(reader or cfg.model_name, layer=layer, device=device, dtype=dtype,
                                      chat_template=chat_template, include_special=include_special, window=window)
        if rdr.layer != layer:
            raise UserError(f"the given reader is cut at layer {rdr.layer}, the SAE needs layer {layer}")
        try:
            loaded.sae.check_reader(rdr.hidden_size, rdr.name)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        sae_model = loaded.sae.to(rdr.device)
        settings = EncodeSettings(
            reader=rdr.name, layer=layer, sae=loaded.sae_id, chat_template=rdr.chat_template,
            include_special=rdr.include_special, window=rdr.window, batch_tokens=batch_tokens,
            shard_docs=shard_docs, dtype=str(rdr.dtype).replace("torch.", ""),
            corpus_fingerprint=corpus.fingerprint, n_docs=corpus.n_docs,
            extra={"text_col": text_col, "messages_col": messages_col, "kind": corpus.kind},
        )
        _prepare_workdir(work_dir, settings)
        n_shards = (corpus.n_docs + shard_docs - 1) // shard_docs
        pending = [s for s in range(n_shards) if not _act_path(work_dir, s).exists()]
        done_docs = corpus.n_docs - sum(min(shard_docs, corpus.n_docs - s * shard_docs) for s in pending)
        _log(f"encoding {corpus.n_docs} documents of {Path(corpus_path).name} as {name!r}: reader {rdr.name} "
             f"layer {layer}, SAE {loaded.sae_id} (d_sae {cfg.d_sae}), device {rdr.device} {settings.dtype}")
        if pending:
            _log(f"estimated size on disk: {_estimate_size(rdr, sae_model, corpus, batch_tokens)}")
        if done_docs:
            _log(f"resuming: {n_shards - len(pending)} of {n_shards} shards already done")

        _run_shards(rdr, sae_model, corpus, work_dir, pending, settings, done_docs, progress)

        shards = range(n_shards)
        doc_tokens = pl.concat([pl.read_parquet(_docs_path(work_dir, s), glob=False) for s in shards])
        col = "messages" if corpus.kind == "messages" else "text"
        documents = corpus.docs.join(doc_tokens, on="row_idx", how="left").select(
            "row_idx", pl.col(col).alias("text"), pl.col("n_tokens").cast(pl.Int32), "meta")
        con = store_mod.connect(store_path, wait=wait)
        try:
            with store_mod.transaction(con):
                store_mod.register_sae(con, loaded.sae_id, {
                    "d_in": cfg.d_in, "d_sae": cfg.d_sae, "activation": cfg.activation, "k": cfg.k,
                    "reader": rdr.name, "layer": layer, "hook_name": cfg.hook_name or f"blocks.{layer}.hook_resid_post",
                    "path": str(loaded.path)}, loaded.labels)
                store_mod.ingest_corpus(
                    con, name=name, source=corpus.source, reader=rdr.name, layer=layer, sae=loaded.sae_id,
                    pooling=POOLINGS, config=settings.as_dict(), documents=documents,
                    activation_files=[str(_act_path(work_dir, s)) for s in shards])
            row = store_mod.StoreReader(con).corpus(name)
        finally:
            con.close()
        remove_work_dir(work_dir, store_path)
        _log(f"stored {name!r}: {row['n_docs']} documents, {row['n_tokens']} tokens in {store_path}")
        return row


def _run_shards(rdr: Reader, sae: SparseAutoencoder, corpus: Corpus, work_dir: Path, pending: list[int],
                settings: EncodeSettings, done_docs: int, progress: bool) -> None:
    from tqdm import tqdm

    writer_q: queue.Queue = queue.Queue(maxsize=2)
    errors: list[BaseException] = []

    def writer() -> None:
        while (item := writer_q.get()) is not None:
            shard, docs_df, acts_df = item
            try:
                _atomic_parquet(docs_df, _docs_path(work_dir, shard))
                _atomic_parquet(acts_df, _act_path(work_dir, shard))  # written last: marks the shard done
            except BaseException as exc:
                errors.append(exc)
                return

    wt = threading.Thread(target=writer, daemon=True)
    wt.start()
    bar = tqdm(total=corpus.n_docs, initial=done_docs, unit="doc", disable=not progress,
               file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
    tokens, t0 = 0, time.perf_counter()

    def on_batch(n: int) -> None:
        nonlocal tokens
        tokens += n
        bar.set_postfix_str(f"{tokens / max(time.perf_counter() - t0, 1e-9):,.0f} tok/s", refresh=False)

    try:
        prep = lambda s: _tokenise_shard(rdr, corpus, s, settings.shard_docs, settings.batch_tokens)  # noqa: E731
        for work in _prefetch(prep, pending):
            acts = encode_shard(rdr, sae, work, on_batch)
            docs_df = pl.DataFrame({"row_idx": work.row_idx.astype(np.int64), "n_tokens": work.n_tokens})
            if errors:
                raise errors[0]
            writer_q.put((work.shard, docs_df, acts))
            bar.update(len(work.row_idx))
    finally:
        writer_q.put(None)
        wt.join()
        bar.close()
    if errors:
        raise errors[0]
