"""Encode throughput: the whole pipeline vs the bare truncated forward pass, on the same batches.

    python benchmarks/encode_throughput.py [--corpus PATH --text-col COL --docs N --device auto]

The bare pass runs only ``reader.hidden_states`` over pre-tokenised, pre-padded batches (the
model's floor). The pipeline is ``encode_corpus`` end to end with the same reader object:
tokenisation, SAE, pooling, Parquet shards and the DuckDB ingest included. Both are measured in
one process, alternating, and reported as tokens/s and their ratio (target ≥ 0.9).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from saeembed.corpus import read_corpus  # noqa: E402
from saeembed.encode import _tokenise_shard, encode_corpus  # noqa: E402
from saeembed.reader import Reader  # noqa: E402
from saeembed.sae import open_sae  # noqa: E402

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "amazon_multidomain_sentiment" / "data.parquet"


def bare_forward(reader: Reader, corpus_path: Path, text_col: str | None, shard_docs: int, batch_tokens: int) -> tuple[int, float]:
    corpus = read_corpus(corpus_path, text_col=text_col)
    shards = [_tokenise_shard(reader, corpus, s, shard_docs, batch_tokens)
              for s in range((corpus.n_docs + shard_docs - 1) // shard_docs)]
    tokens = sum(int(attn.sum()) for sh in shards for _, _, attn, _ in sh.batches)
    if reader.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for sh in shards:
        for _, ids, attn, _ in sh.batches:
            reader.hidden_states(ids, attn)
    if reader.device.type == "cuda":
        torch.cuda.synchronize()
    return tokens, time.perf_counter() - t0


def pipeline(reader: Reader, corpus_path: Path, text_col: str | None, sae: str, shard_docs: int, batch_tokens: int) -> tuple[int, float]:
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "bench.duckdb"
        t0 = time.perf_counter()
        row = encode_corpus(store, corpus_path, "bench", text_col=text_col, sae=sae, loaded_reader=reader,
                            shard_docs=shard_docs, batch_tokens=batch_tokens, progress=False)
        if reader.device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
    return int(row["n_tokens"]), elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--text-col", default="text")
    ap.add_argument("--docs", type=int, default=300)
    ap.add_argument("--max-chars", type=int, default=1500, help="clip documents (keeps the run short)")
    ap.add_argument("--sae", default="default")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--batch-tokens", type=int, default=4096)
    ap.add_argument("--shard-docs", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = ap.parse_args()

    sae = open_sae(args.sae)
    reader = Reader(sae.sae.cfg.model_name, layer=sae.sae.cfg.hook_layer or 15, device=args.device, dtype=args.dtype)
    with tempfile.TemporaryDirectory() as tmp:
        sample = Path(tmp) / "sample.parquet"
        (pl.read_parquet(args.corpus).head(args.docs)
         .select(pl.col(args.text_col).str.slice(0, args.max_chars).alias("text")).write_parquet(sample))
        bare_forward(reader, sample, "text", args.shard_docs, args.batch_tokens)  # warm-up
        results = {"bare": [], "pipeline": []}
        for _ in range(args.repeats):  # alternate, so drift on a noisy machine hits both alike
            results["bare"].append(bare_forward(reader, sample, "text", args.shard_docs, args.batch_tokens))
            results["pipeline"].append(pipeline(reader, sample, "text", args.sae, args.shard_docs, args.batch_tokens))
    bare_tps = max(t / s for t, s in results["bare"])
    pipe_tps = max(t / s for t, s in results["pipeline"])
    bare_tokens = results["bare"][0][0]
    pooled_tokens = results["pipeline"][0][0]
    out = {
        "device": str(reader.device), "dtype": str(reader.dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(), "docs": args.docs, "sae": sae.sae_id,
        "forward_tokens": bare_tokens, "pooled_tokens": pooled_tokens,
        "bare_forward_tok_s": round(bare_tps, 1),
        # the pipeline forwards the same tokens; count them the same way for the ratio
        "pipeline_tok_s": round(pipe_tps * bare_tokens / max(pooled_tokens, 1), 1),
    }
    out["ratio"] = round(out["pipeline_tok_s"] / out["bare_forward_tok_s"], 3)
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:>20}  {v}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
