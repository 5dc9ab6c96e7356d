"""Encoding on CPU in bf16 instead of fp32: speed and how much the SAE embeddings change.

    python benchmarks/cpu_bf16.py [--corpus datasets/goemotions/sample.parquet] [--docs 200] [--json]

CPUs with native bf16 arithmetic (AVX512-BF16 or AMX: AMD Zen 4+, Intel Sapphire Rapids+) run the
reader's matmuls in bf16 several times faster than in fp32; elsewhere bf16 is emulated and slower.
The same documents are encoded end to end (``encode_corpus``: reader, SAE, pooling, ingest) once
per dtype, alternating, best of ``--repeats``, so drift on a noisy machine hits both alike. Then the
two stores' max-pooled document vectors are compared:

- *active-set Jaccard*: per document, |latents active in both| / |active in either|, averaged;
- *top-10 kept*: share of each document's 10 strongest fp32 latents that are among its 10 strongest
  in bf16;
- *value error*: median relative difference of a latent's pooled value where both have it.

The SAE itself runs in fp32 either way; only the reader's hidden states differ.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from saeembed.api import open_store
from saeembed.encode import encode_corpus
from saeembed.reader import Reader
from saeembed.sae import open_sae

REPO = Path(__file__).resolve().parents[1]


def encode_once(path: Path, reader: Reader, docs: Path, sae: str) -> tuple[float, int]:
    """Seconds and content tokens of one end-to-end encode with an already loaded reader."""
    t0 = time.perf_counter()
    row = encode_corpus(path, docs, "bench", text_col="text", sae=sae, loaded_reader=reader, progress=False)
    return time.perf_counter() - t0, int(row["n_tokens"])


def compare(a_path: Path, b_path: Path, top: int = 10) -> dict[str, float]:
    """Active-set Jaccard, top-``top`` overlap and median relative value error of two encodings."""
    mats = []
    for p in (a_path, b_path):
        st = open_store(p)
        mat, _ = st.embeddings("bench")
        mats.append(mat.tocsr())
        st.close()
    a, b = mats
    jac, kept, rel = [], [], []
    for i in range(a.shape[0]):
        ra, rb = a.getrow(i), b.getrow(i)
        sa, sb = set(ra.indices.tolist()), set(rb.indices.tolist())
        if sa or sb:
            jac.append(len(sa & sb) / len(sa | sb))
        ta = ra.indices[np.argsort(-ra.data)[:top]]
        tb = set(rb.indices[np.argsort(-rb.data)[:top]].tolist())
        if len(ta):
            kept.append(np.mean([t in tb for t in ta]))
        va, vb = dict(zip(ra.indices, ra.data)), dict(zip(rb.indices, rb.data))
        rel += [abs(va[j] - vb[j]) / max(abs(va[j]), 1e-6) for j in sa & sb]
    return {"active_set_jaccard": round(float(np.mean(jac)), 4), f"top{top}_kept": round(float(np.mean(kept)), 4),
            "median_rel_value_error": round(float(np.median(rel)), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=REPO / "datasets" / "goemotions" / "sample.parquet")
    ap.add_argument("--text-col", default="text")
    ap.add_argument("--docs", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--sae", default="default")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = open_sae(args.sae).sae.cfg
    readers = {d: Reader(cfg.model_name, layer=cfg.hook_layer, device="cpu", dtype=d) for d in ("fp32", "bf16")}
    with tempfile.TemporaryDirectory() as tmp:
        docs = Path(tmp) / "docs.parquet"
        (pl.read_parquet(args.corpus).filter(pl.col(args.text_col).str.len_chars() > 0).head(args.docs)
         .select(pl.col(args.text_col).alias("text")).write_parquet(docs))
        best: dict[str, float] = {}
        tokens = 0
        for rep in range(args.repeats):
            for dtype in ("fp32", "bf16"):
                store = Path(tmp) / f"{dtype}_{rep}.duckdb"
                s, tokens = encode_once(store, readers[dtype], docs, args.sae)
                best[dtype] = min(best.get(dtype, float("inf")), s)
        result = {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "docs": args.docs,
                  "content_tokens": tokens, "threads": torch.get_num_threads(),
                  "fp32_tok_s": round(tokens / best["fp32"], 1), "bf16_tok_s": round(tokens / best["bf16"], 1),
                  "bf16_over_fp32": round(best["fp32"] / best["bf16"], 2),
                  **compare(Path(tmp) / "fp32_0.duckdb", Path(tmp) / "bf16_0.duckdb")}
    if args.json:
        print(json.dumps(result))
        return
    print(f"torch CPU capability: {result['cpu_capability']}, {result['threads']} threads")
    print("| docs | content tokens | fp32 tok/s | bf16 tok/s | bf16/fp32 | active-set Jaccard | top-10 kept | "
          "median relative value error |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {result['docs']} | {tokens} | {result['fp32_tok_s']:.0f} | {result['bf16_tok_s']:.0f} | "
          f"{result['bf16_over_fp32']:.2f}× | {result['active_set_jaccard']:.3f} | {result['top10_kept']:.3f} | "
          f"{result['median_rel_value_error']:.3f} |")


if __name__ == "__main__":
    main()
