"""The activation cache: reader hidden states of pooled tokens as fp16 safetensors chunks, restartable.

Chunk ``i`` always holds documents ``[i*chunk_docs, (i+1)*chunk_docs)`` and is written via
tmp+rename, so a killed run leaves only whole chunks and a rerun recomputes exactly the missing ones
with the same arrays. ``manifest.json`` records reader, layer, corpora and chunking; a rerun with
other settings is refused rather than silently mixing activations of two setups.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save

from ..errors import UserError
from ..fsutil import atomic_write_bytes, atomic_write_json
from ..reader import Reader, batches_by_budget, make_reader, pad_batch
from .corpora import CorpusSpec, load_documents

CACHE_FORMAT = 1
MANIFEST = "manifest.json"


def _chunk_path(cache_dir: Path, i: int) -> Path:
    return cache_dir / f"chunk_{i:05d}.safetensors"


def _chunk_tokens(path: Path) -> int:
    with safe_open(str(path), "np") as f:
        return int(f.metadata()["n_tokens"])


def _cache_identity(reader: Any, corpora: Sequence[CorpusSpec], chunk_docs: int, seed: int) -> dict[str, Any]:
    """What makes two caches interchangeable; a rerun must match it exactly."""
    return {
        "format": CACHE_FORMAT,
        "reader": reader.name,
        "layer": reader.layer,
        "hook_name": getattr(reader, "hook_name", f"blocks.{reader.layer}.hook_resid_post"),
        "hidden_size": reader.hidden_size,
        "chat_template": reader.chat_template,
        "window": reader.window,
        "dtype": str(getattr(reader, "dtype", "float32")).replace("torch.", ""),
        "corpora": [asdict(c) for c in corpora],
        "chunk_docs": chunk_docs,
        "seed": seed,
    }


def _check_identity(man_path: Path, identity: dict[str, Any]) -> None:
    if not man_path.exists():
        return
    old = json.loads(man_path.read_text())
    changed = [k for k in identity if old.get(k) != identity[k]]
    if changed:
        raise UserError(f"activation cache {man_path.parent} was made with different settings "
                        f"({', '.join(changed)}); use a new --cache directory or delete this one")


def _chunk_arrays(reader: Any, docs: Sequence[str], lo: int, hi: int, token_budget: int) -> dict[str, torch.Tensor]:
    """Hidden states of the pooled tokens of documents ``lo..hi-1``, in document and position order."""
    wins = [w for d in range(lo, hi) for w in reader.windows(docs[d], d)]
    serial = {id(w): s for s, w in enumerate(wins)}
    parts: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for batch in batches_by_budget(wins, token_budget):
        ids, attn, pool = pad_batch(batch, reader.pad_id)
        hidden = reader.hidden_states(ids, attn).float().cpu()
        for j, w in enumerate(batch):
            m = pool[j]
            parts[serial[id(w)]] = (hidden[j][m].to(torch.float16).numpy(), ids[j][m].numpy())
    acts, toks, doc_ids, pos = [np.zeros((0, reader.hidden_size), np.float16)], [], [], []
    seen: dict[int, int] = {}
    for s, w in enumerate(wins):  # windows of one document continue its positions
        a, t = parts[s]
        start = seen.get(w.doc, 0)
        seen[w.doc] = start + len(t)
        acts.append(a)
        toks.append(t.astype(np.int32))
        doc_ids.append(np.full(len(t), w.doc, np.int32))
        pos.append(np.arange(start, start + len(t), dtype=np.int32))
    empty = [np.zeros(0, np.int32)]
    return {"acts": torch.from_numpy(np.concatenate(acts)), "tok": torch.from_numpy(np.concatenate(empty + toks)),
            "doc": torch.from_numpy(np.concatenate(empty + doc_ids)),
            "pos": torch.from_numpy(np.concatenate(empty + pos))}


def read_hidden_states(reader: Any, docs: Sequence[str], chunk_docs: int = 64, token_budget: int = 8192
                       ) -> Iterator[dict[str, np.ndarray]]:
    """The pooled tokens' hidden states of ``docs``, ``chunk_docs`` documents at a time, as the cache
    holds them (``acts``, ``tok``, ``doc`` = index into ``docs``, ``pos``), without writing a cache."""
    for lo in range(0, len(docs), chunk_docs):
        arrays = _chunk_arrays(reader, docs, lo, min(lo + chunk_docs, len(docs)), token_budget)
        yield {k: v.numpy() for k, v in arrays.items()}


def cache_activations(
    corpora: Sequence[CorpusSpec],
    cache_dir: str | Path,
    reader: Any = None,
    layer: int = 15,
    device: str = "auto",
    max_tokens: int | None = None,
    chunk_docs: int = 256,
    token_budget: int = 8192,
    seed: int = 0,
    progress: Callable[[str], None] | None = print,
    dtype: str | None = None,
) -> dict[str, Any]:
    """Cache pooled-token hidden states of ``reader`` at ``layer`` as fp16 chunks; returns the manifest.

    ``reader`` is a loaded :class:`~saeembed.reader.Reader` (reused, e.g. by tests) or a reader
    spec string/None (loaded here, in ``dtype``: ``bf16`` cached 3.5x faster on a CPU
    with AVX512-BF16, see ``benchmarks/cpu_bf16.py``; the chunks are fp16 either way). Caching
    stops once ``max_tokens`` tokens are cached.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    if not isinstance(reader, Reader):
        reader = make_reader(reader, layer=layer, device=device, dtype=dtype)
    identity = _cache_identity(reader, corpora, chunk_docs, seed)
    man_path = cache_dir / MANIFEST
    _check_identity(man_path, identity)
    atomic_write_json(man_path, {**identity, "complete": False})

    docs = load_documents(corpora, seed=seed)
    n_chunks = math.ceil(len(docs) / chunk_docs)
    total = computed = done_chunks = 0
    t0 = time.time()
    for ci in range(n_chunks):
        if max_tokens is not None and total >= max_tokens:
            break
        path = _chunk_path(cache_dir, ci)
        if not path.exists():
            lo = ci * chunk_docs
            tensors = _chunk_arrays(reader, docs, lo, min(lo + chunk_docs, len(docs)), token_budget)
            n = len(tensors["tok"])
            meta = {"n_tokens": str(n), "docs": f"{lo}-{lo + chunk_docs}"}
            atomic_write_bytes(path, save(tensors, metadata=meta))
            computed += n
            if progress:
                el = time.time() - t0
                progress(f"chunk {ci + 1}/{n_chunks}: {total + n:,} tokens cached "
                         f"({computed / max(el, 1e-9):.0f} tok/s, {el:.0f} s)")
        total += _chunk_tokens(path)
        done_chunks += 1
    manifest = {**identity, "complete": True, "n_chunks": done_chunks, "n_tokens": total,
                "n_docs_available": len(docs), "max_tokens": max_tokens}
    atomic_write_json(man_path, manifest)
    return manifest


class ActivationCache:
    """Read side of :func:`cache_activations`: the manifest plus whole chunks on demand."""

    def __init__(self, cache_dir: str | Path) -> None:
        self.dir = Path(cache_dir)
        man = self.dir / MANIFEST
        if not man.exists():
            raise UserError(f"{self.dir} is not an activation cache (no {MANIFEST}); run caching first")
        self.manifest: dict[str, Any] = json.loads(man.read_text())
        n = self.manifest.get("n_chunks")
        paths = sorted(self.dir.glob("chunk_*.safetensors"))
        self.paths = paths[:n] if n is not None else paths
        if not self.paths:
            raise UserError(f"activation cache {self.dir} holds no chunks")
        self.sizes = [_chunk_tokens(p) for p in self.paths]

    @property
    def n_tokens(self) -> int:
        return int(sum(self.sizes))

    @property
    def d_in(self) -> int:
        return int(self.manifest["hidden_size"])

    def load(self, i: int) -> dict[str, np.ndarray]:
        with safe_open(str(self.paths[i]), "np") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
