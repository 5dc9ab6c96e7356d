"""Encode throughput before/after the shared-prefix cache, bare forward vs the whole pipeline.

    python benchmarks/encode_throughput.py [--corpora goemotions,tweeteval,amazon] [--docs 300]
                                           [--corpus PATH --text-col COL] [--json] [--out FILE]

Two readers of the same model are loaded: *before* runs the full forward of every window
(``prefix_cache=False``: template prefix, content, closing tokens); *after* is the default
(template prefix computed once and reused from its key/value cache, closing tokens skipped).
For each corpus and each reader it measures

- the *bare* forward: only ``reader.hidden_states`` over pre-tokenised, pre-padded batches;
- the *pipeline*: ``encode_corpus`` end to end with the same reader object (tokenisation, SAE,
  pooling, Parquet shards, DuckDB ingest included),

alternating before/after and bare/pipeline in one process so drift on a noisy machine hits all
alike (best of ``--repeats``). Figures: *content tokens/s* (tokens that are pooled, i.e. the
document's own tokens; the figure users care about), *processed tokens per content token*
(padded tokens the model computes / content tokens; the prefix computed once per reader is not
counted; also counted, not timed, for batching by the token budget alone, the batcher before the
padding limit), and the ratios after/before and pipeline/bare.
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

from saeembed.corpus import read_corpus
from saeembed.encode import encode_corpus, tokenise_shard
from saeembed.reader import Reader, batches_by_budget
from saeembed.sae import open_sae

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
CORPORA = {  # name: (path, text column, default number of documents)
    "goemotions": (REPO / "datasets" / "goemotions" / "sample.parquet", "text", 300),
    "tweeteval": (SHARED / "tweeteval" / "data.parquet", "text", 300),
    "amazon": (SHARED / "amazon_multidomain_sentiment" / "data.parquet", "text", 100),
}


def _sync(reader: Reader) -> None:
    if reader.device.type == "cuda":
        torch.cuda.synchronize()


def token_counts(reader: Reader, corpus_path: Path, shard_docs: int, batch_tokens: int) -> dict[str, int]:
    """Content (pooled), whole-window, computed and padded-computed tokens of the encode's batches."""
    corpus = read_corpus(corpus_path, text_col="text")
    shards = [tokenise_shard(reader, corpus, s, shard_docs, batch_tokens)
              for s in range((corpus.n_docs + shard_docs - 1) // shard_docs)]
    wins = [w for sh in shards for w in sh.windows]
    # what batching by the token budget alone (the batcher before the padding limit) would pad to
    budget_only = sum(len(b) * max(w.n_computed for w in b) for sh in shards
                      for b in batches_by_budget(sh.windows, batch_tokens, padding_slack=float("inf")))
    return {"content": sum(w.n_pooled for w in wins), "window": sum(len(w.ids) for w in wins),
            "computed": sum(w.n_computed for w in wins),
            "padded": sum(ids.numel() for sh in shards for _, ids, _, _ in sh.batches),
            "padded_budget_only": budget_only}


def bare_forward(reader: Reader, corpus_path: Path, shard_docs: int, batch_tokens: int) -> tuple[float, float]:
    corpus = read_corpus(corpus_path, text_col="text")
    shards = [tokenise_shard(reader, corpus, s, shard_docs, batch_tokens)
              for s in range((corpus.n_docs + shard_docs - 1) // shard_docs)]
    _sync(reader)
    t0, c0 = time.perf_counter(), time.process_time()
    for sh in shards:
        for _, ids, attn, _ in sh.batches:
            reader.hidden_states(ids, attn)
    _sync(reader)
    return time.perf_counter() - t0, time.process_time() - c0


def pipeline(reader: Reader, corpus_path: Path, sae: str, shard_docs: int,
             batch_tokens: int) -> tuple[int, float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        t0, c0 = time.perf_counter(), time.process_time()
        row = encode_corpus(Path(tmp) / "bench.duckdb", corpus_path, "bench", text_col="text", sae=sae,
                            loaded_reader=reader, shard_docs=shard_docs, batch_tokens=batch_tokens, progress=False)
        _sync(reader)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    return int(row["n_tokens"]), elapsed, cpu


def bench_corpus(readers: dict[str, Reader], sample: Path, args: argparse.Namespace) -> dict:
    counts = {v: token_counts(r, sample, args.shard_docs, args.batch_tokens) for v, r in readers.items()}
    for r in readers.values():  # warm-up
        bare_forward(r, sample, args.shard_docs, args.batch_tokens)
    times: dict[str, dict[str, list[tuple[float, float]]]] = {v: {"bare": [], "pipeline": []} for v in readers}
    for _ in range(args.repeats):  # alternate, so drift on a noisy machine hits every variant alike
        for v, r in readers.items():
            times[v]["bare"].append(bare_forward(r, sample, args.shard_docs, args.batch_tokens))
            n_content, s, cpu = pipeline(r, sample, args.sae, args.shard_docs, args.batch_tokens)
            assert n_content == counts[v]["content"], (n_content, counts[v])
            times[v]["pipeline"].append((s, cpu))
    out: dict = {}
    for v in readers:
        c = counts[v]
        # --clock cpu: seconds of CPU this process used (all its threads), robust to other jobs on a
        # shared machine; wall: elapsed time
        k = 1 if args.clock == "cpu" else 0
        bare_s, pipe_s = min(t[k] for t in times[v]["bare"]), min(t[k] for t in times[v]["pipeline"])
        out[v] = {**{f"{k}_tokens": n for k, n in c.items()},
                  "processed_per_content": round(c["padded"] / c["content"], 3),
                  "processed_per_content_budget_only_batching": round(c["padded_budget_only"] / c["content"], 3),
                  "bare_content_tok_s": round(c["content"] / bare_s, 1),
                  "pipeline_content_tok_s": round(c["content"] / pipe_s, 1),
                  "bare_processed_tok_s": round(c["padded"] / bare_s, 1),
                  "pipeline_over_bare": round(bare_s / pipe_s, 3)}
    b, a = out["before"], out["after"]
    out["after_over_before"] = {
        "bare_content_tok_s": round(a["bare_content_tok_s"] / b["bare_content_tok_s"], 2),
        "pipeline_content_tok_s": round(a["pipeline_content_tok_s"] / b["pipeline_content_tok_s"], 2),
        "processed_per_content": round(a["processed_per_content"] / b["processed_per_content"], 3),
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpora", default="goemotions,tweeteval,amazon", help="built-in corpora, comma-separated")
    ap.add_argument("--corpus", type=Path, help="also benchmark this file (parquet)")
    ap.add_argument("--text-col", default="text")
    ap.add_argument("--docs", type=int, help="documents per corpus (default: 300 short, 100 Amazon)")
    ap.add_argument("--max-chars", type=int, default=4000, help="clip documents (keeps the run short)")
    ap.add_argument("--sae", default="default")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-tokens", type=int, default=4096)
    ap.add_argument("--shard-docs", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--clock", default="wall", choices=("wall", "cpu"),
                    help="wall: elapsed seconds; cpu: this process' CPU seconds (a machine shared with other jobs)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--out", type=Path, help="also write the JSON result here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    corpora = {n: CORPORA[n][:2] + (args.docs or CORPORA[n][2],) for n in args.corpora.split(",") if n}
    if args.corpus:
        corpora[args.corpus.stem] = (args.corpus, args.text_col, args.docs or 300)
    sae = open_sae(args.sae)
    layer = sae.sae.cfg.hook_layer if sae.sae.cfg.hook_layer is not None else 15
    readers = {v: Reader(sae.sae.cfg.model_name, layer=layer, device=args.device, dtype=args.dtype,
                         prefix_cache=(v == "after")) for v in ("before", "after")}
    result = {"clock": args.clock, "device": str(readers["after"].device),
              "dtype": str(readers["after"].dtype).replace("torch.", ""),
              "threads": torch.get_num_threads(), "sae": sae.sae_id, "batch_tokens": args.batch_tokens,
              "prefix_cache_max_rel_error": readers["after"].prefix_cache_error, "corpora": {}}
    for name, (path, col, n_docs) in corpora.items():
        if not Path(path).exists():
            print(f"skipping {name}: {path} not found", file=sys.stderr)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            sample = Path(tmp) / "sample.parquet"
            (pl.read_parquet(path).filter(pl.col(col).str.len_chars() > 0).head(n_docs)
             .select(pl.col(col).str.slice(0, args.max_chars).alias("text")).write_parquet(sample))
            result["corpora"][name] = {"docs": n_docs, **bench_corpus(readers, sample, args)}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['device']} {result['dtype']}, {result['threads']} threads, {args.clock} clock, "
          f"SAE {result['sae']}, prefix cache max relative error {result['prefix_cache_max_rel_error']:.2g}")
    print("| corpus | docs | content tok/doc | processed/content before → after | bare content tok/s before → "
          "after (×) | pipeline content tok/s before → after (×) | pipeline/bare before, after |")
    print("|---|---|---|---|---|---|---|")
    for name, r in result["corpora"].items():
        b, a, x = r["before"], r["after"], r["after_over_before"]
        print(f"| {name} | {r['docs']} | {b['content_tokens'] / r['docs']:.1f} | {b['processed_per_content']:.2f} → "
              f"{a['processed_per_content']:.2f} | {b['bare_content_tok_s']:.0f} → {a['bare_content_tok_s']:.0f} "
              f"({x['bare_content_tok_s']:.2f}×) | {b['pipeline_content_tok_s']:.0f} → "
              f"{a['pipeline_content_tok_s']:.0f} ({x['pipeline_content_tok_s']:.2f}×) | "
              f"{b['pipeline_over_bare']:.2f}, {a['pipeline_over_bare']:.2f} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
