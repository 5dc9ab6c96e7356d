"""Reader + SAE throughput on a GPU (or, at a tiny shape, on CPU) with random weights: no download.

    python benchmarks/gpu_encode.py --shape llama-3.1-8b --layer 19 --d-sae 65536   # the paper's setting
    python benchmarks/gpu_encode.py --shape smollm2-135m --layer 15 --d-sae 16384
    python benchmarks/gpu_encode.py --shape tiny --device cpu --docs 40            # smoke test on CPU

The model is a Llama built from a config (``--shape``) with random weights and only blocks
``0..layer`` (blocks after the SAE's layer never run, so they are never built), in ``--dtype``
(default bf16 on CUDA, fp32 on CPU) with ``--attn`` (default SDPA). Documents are real text
(GoEmotions comments from ``datasets/``, ``--concat K`` joins K of them for longer documents),
read through the SmolLM2 tokenizer and chat template, so windows have the template prefix of a
real encode. The SAE is random too (``--sae-activation topk`` with k = 91, the L0 of the paper's
Llama-3.1-8B SAE, or ``relu`` with its bias set so that ≈ 91 latents fire per token).

Variants, each timed as the bare truncated forward and as the compute pipeline (tokenise in a
thread, forward, SAE, max/sum/count pooling: ``saeembed.encode.run`` without the Parquet writes):

- ``padded_prefix_cache``: the default reader (template prefix from its key/value cache, closing
  tokens skipped, padded length-sorted batches);
- ``padded_full``: the full forward of every window (``prefix_cache=False``);
- ``packed_full``: the full windows packed into rows of ``--batch-tokens`` (several documents
  per row, position ids restarting, block-diagonal causal mask), bare forward only.

Reported per variant: content tokens/s (tokens that are pooled), processed tokens per content
token, model FLOPs per second and MFU (model FLOPs of the real tokens computed, matmuls and
attention, over the device's peak: H100/H200 989, A100 312 bf16 TFLOP/s, or ``--peak-tflops``),
pipeline/bare, and peak GPU memory. ``--json`` prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from saeembed.encode.run import ShardWork, encode_shard, prefetch
from saeembed.reader import Reader, Window, batches_by_budget, pad_batch, resolve_reader
from saeembed.sae.model import SAEConfig, SparseAutoencoder

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO / "datasets" / "goemotions" / "sample.parquet"
SHAPES = {  # Llama shapes (the published configs' widths; blocks after --layer are not built)
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
             "num_key_value_heads": 2, "vocab_size": 49152},
    "smollm2-135m": {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                     "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
                     "rope_theta": 100000.0},
    "llama-3.2-1b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
                     "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
                     "rope_theta": 500000.0},
    "llama-3.1-8b": {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                     "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
                     "rope_theta": 500000.0},
}
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}
SAE_L0 = 91


def build_model(shape: str, layer: int, device: torch.device, dtype: torch.dtype, attn: str) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaModel

    spec = dict(SHAPES[shape])
    if not 0 <= layer < spec["num_hidden_layers"]:
        raise SystemExit(f"--layer {layer} is out of range for {shape} ({spec['num_hidden_layers']} blocks)")
    cfg = LlamaConfig(**{**spec, "num_hidden_layers": layer + 1}, max_position_embeddings=4096,
                      attn_implementation=attn)
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaModel(cfg)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def flops_per_token(cfg, n_blocks: int) -> float:
    """Matmul FLOPs per token of ``n_blocks`` Llama blocks (2 per multiply-add), attention excluded."""
    h, i = cfg.hidden_size, cfg.intermediate_size
    kv = cfg.num_key_value_heads * (h // cfg.num_attention_heads)
    return 2.0 * n_blocks * (2 * h * h + 2 * h * kv + 3 * h * i)


def attention_flops(windows: list[Window], cfg, n_blocks: int) -> float:
    """QKᵀ and AV FLOPs of the computed tokens: 4·hidden per (query, key) pair, causal."""
    total = 0
    for w in windows:  # a token at position p attends to p + 1 keys (cached prefix included)
        a, b = w.start, w.end
        total += (b * (b + 1) - a * (a + 1)) // 2
    return 4.0 * cfg.hidden_size * n_blocks * total


def random_sae(reader: Reader, d_sae: int, activation: str, probe: list[Window]) -> SparseAutoencoder:
    torch.manual_seed(1)
    sae = SparseAutoencoder(SAEConfig(d_in=reader.hidden_size, d_sae=d_sae, activation=activation,
                                      k=SAE_L0 if activation == "topk" else None, hook_layer=reader.layer))
    sae = sae.to(reader.device)
    if activation == "relu":  # one bias for all latents so that ≈ SAE_L0 fire per token on real hidden states
        ids, attn, pool = pad_batch(probe, reader.pad_id)
        x = reader.hidden_states(ids, attn)[pool.to(reader.device)].float()
        pre = sae.pre_activation(x)
        q = 1.0 - SAE_L0 / d_sae
        sample = pre.flatten()[torch.randperm(pre.numel(), device=pre.device)[:1_000_000]]
        with torch.no_grad():
            sae.b_enc.sub_(torch.quantile(sample, q))
    return sae


Packed = tuple[torch.Tensor, torch.Tensor, list[tuple[int, int, Window]]]


def pack(windows: list[Window], row_tokens: int) -> list[Packed]:
    """Full windows packed into rows of at most ``row_tokens`` (first fit, longest first): ids,
    position ids (restarting for each window) and (row, offset, window) of every window."""
    rows: list[list[Window]] = []
    fill: list[int] = []
    for w in sorted(windows, key=lambda w: -len(w.ids)):
        for r, used in enumerate(fill):
            if used + len(w.ids) <= row_tokens:
                rows[r].append(w)
                fill[r] += len(w.ids)
                break
        else:
            rows.append([w])
            fill.append(len(w.ids))
    per_batch = max(1, row_tokens // max(fill)) if fill else 1
    out = []
    for b0 in range(0, len(rows), per_batch):
        group = rows[b0:b0 + per_batch]
        width = max(sum(len(w.ids) for w in row) for row in group)
        ids = torch.zeros((len(group), width), dtype=torch.long)
        pos = torch.zeros((len(group), width), dtype=torch.long)
        where = []
        for r, row in enumerate(group):
            off = 0
            for w in row:
                n = len(w.ids)
                ids[r, off:off + n] = torch.tensor(w.ids)
                pos[r, off:off + n] = torch.arange(n)
                where.append((r, off, w))
                off += n
            pos[r, off:] = torch.arange(width - off)  # the tail is one more (ignored) sequence
        out.append((ids, pos, where))
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 3) if device.type == "cuda" else None


def shard_work(reader: Reader, docs: list[str], shard: int, shard_docs: int, batch_tokens: int) -> ShardWork:
    part = docs[shard * shard_docs:(shard + 1) * shard_docs]
    windows = [w for i, d in enumerate(part) for w in reader.windows(d, i)]
    n_tokens = np.zeros(len(part), dtype=np.int64)
    for w in windows:
        n_tokens[w.doc] += w.n_pooled
    batches = [(b, *pad_batch(b, reader.pad_id)) for b in batches_by_budget(windows, batch_tokens)]
    return ShardWork(shard, np.arange(len(part), dtype=np.int64), windows, batches, n_tokens)


def measure(reader: Reader, sae: SparseAutoencoder, docs: list[str], args: argparse.Namespace, packed: bool) -> dict:
    dev = reader.device
    n_shards = (len(docs) + args.shard_docs - 1) // args.shard_docs
    works = [shard_work(reader, docs, s, args.shard_docs, args.batch_tokens) for s in range(n_shards)]
    windows = [w for wk in works for w in wk.windows]
    if packed:
        windows = [Window(w.doc, w.ids, w.pool) for w in windows]  # packing runs every window in full
        packs = pack(windows, args.batch_tokens)
    content = sum(w.n_pooled for w in windows)
    computed = sum(w.n_computed for w in windows)
    processed = (sum(ids.numel() for ids, _, _ in packs) if packed
                 else sum(ids.numel() for wk in works for _, ids, _, _ in wk.batches))

    def bare() -> float:
        _sync(dev)
        t0 = time.perf_counter()
        if packed:
            for ids, pos, _ in packs:
                reader.hidden_states_packed(ids, pos)
        else:
            for wk in works:
                for _, ids, attn, _ in wk.batches:
                    reader.hidden_states(ids, attn)
        _sync(dev)
        return time.perf_counter() - t0

    def pipeline() -> float:
        _sync(dev)
        t0 = time.perf_counter()
        for wk in prefetch(lambda s: shard_work(reader, docs, s, args.shard_docs, args.batch_tokens),
                           list(range(n_shards))):
            encode_shard(reader, sae, wk)
        _sync(dev)
        return time.perf_counter() - t0

    bare()  # warm-up (kernels, allocator)
    _reset_peak(dev)
    bare_s = min(bare() for _ in range(args.repeats))
    out = {"content_tokens": content, "computed_tokens": computed, "processed_tokens": processed,
           "processed_per_content": round(processed / max(content, 1), 3),
           "bare_s": round(bare_s, 4), "bare_content_tok_s": round(content / bare_s, 1),
           "bare_processed_tok_s": round(processed / bare_s, 1)}
    cfg = reader.model.config
    n_blocks = reader.layer + 1
    flops = flops_per_token(cfg, n_blocks) * computed + attention_flops(windows, cfg, n_blocks)
    out["model_tflop_s"] = round(flops / bare_s / 1e12, 4)
    out["mfu"] = round(flops / bare_s / (args.peak_tflops * 1e12), 4) if args.peak_tflops else None
    if not packed:
        pipe_s = min(pipeline() for _ in range(args.repeats))
        out["pipeline_content_tok_s"] = round(content / pipe_s, 1)
        out["pipeline_over_bare"] = round(bare_s / pipe_s, 3)
    out["peak_gpu_mem_gib"] = _peak_gib(dev)
    return out


def packed_error(reader: Reader, docs: list[str], row_tokens: int) -> float:
    """Max per-token relative error of packed vs padded full-forward hidden states (content tokens)."""
    from saeembed.reader.prefix import max_relative_error

    windows = [Window(w.doc, w.ids, w.pool) for i, d in enumerate(docs[:16]) for w in reader.windows(d, i)]
    ref = {}
    for b in batches_by_budget(windows, row_tokens):
        ids, attn, pool = pad_batch(b, reader.pad_id)
        h = reader.hidden_states(ids, attn)
        for j, w in enumerate(b):
            ref[id(w)] = h[j][pool[j].to(h.device)].float()
    err = 0.0
    for ids, pos, where in pack(windows, row_tokens):
        h = reader.hidden_states_packed(ids, pos)
        for r, off, w in where:
            got = h[r, off:off + len(w.ids)][torch.tensor(w.pool, device=h.device)].float()
            err = max(err, max_relative_error(got, ref[id(w)]))
    return err


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="smollm2-135m", choices=sorted(SHAPES))
    ap.add_argument("--layer", type=int, default=15)
    ap.add_argument("--d-sae", type=int, default=16384)
    ap.add_argument("--sae-activation", default="topk", choices=("topk", "relu"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto", help="auto: bf16 on CUDA, fp32 on CPU")
    ap.add_argument("--attn", default="sdpa", help="sdpa, eager or flash_attention_2")
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--concat", type=int, default=1, help="join K consecutive texts into one document")
    ap.add_argument("--batch-tokens", type=int, default=None, help="default: 32768 on CUDA, 4096 on CPU")
    ap.add_argument("--shard-docs", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads")
    ap.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (default: known GPUs, bf16)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from saeembed.reader import pick_device, pick_dtype

    device = pick_device(args.device)
    dtype = pick_dtype(args.dtype, device)
    if args.batch_tokens is None:
        args.batch_tokens = 32768 if device.type == "cuda" else 4096
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    if args.peak_tflops is None and gpu and dtype in (torch.bfloat16, torch.float16):
        args.peak_tflops = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in gpu), None)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_reader(None)[1])
    texts = pl.read_parquet(args.corpus)["text"].head(args.docs * args.concat).to_list()
    docs = [" ".join(texts[i:i + args.concat]) for i in range(0, len(texts), args.concat)][: args.docs]
    t0 = time.perf_counter()
    model = build_model(args.shape, args.layer, device, dtype, args.attn)
    build_s = time.perf_counter() - t0
    readers = {on: Reader.from_model(build_model(args.shape, args.layer, device, dtype, args.attn) if not on
                                     else model, tokenizer, args.layer, name=f"random {args.shape}",
                                     prefix_cache=on)
               for on in (True, False)} if device.type == "cpu" else None
    if readers is None:  # on a GPU one model serves both readers (weights shared, no second copy)
        readers = {True: Reader.from_model(model, tokenizer, args.layer, name=f"random {args.shape}")}
        readers[False] = Reader.from_model(model, tokenizer, args.layer, name=f"random {args.shape}",
                                           prefix_cache=False)
    probe = [w for i, d in enumerate(docs[:32]) for w in readers[False].windows(d, i)]
    sae = random_sae(readers[False], args.d_sae, args.sae_activation, probe).to(dtype)
    cfg = model.config
    result = {
        "shape": args.shape, "layer": args.layer, "d_sae": args.d_sae, "sae_activation": args.sae_activation,
        "device": str(device), "gpu": gpu, "dtype": str(dtype).replace("torch.", ""), "attn": args.attn,
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "docs": len(docs), "batch_tokens": args.batch_tokens, "build_s": round(build_s, 2),
        "params_truncated": sum(p.numel() for p in model.parameters()),
        "gflop_per_token_matmul": round(flops_per_token(cfg, args.layer + 1) / 1e9, 4),
        "peak_tflops": args.peak_tflops,
        "prefix_cache_max_rel_error": readers[True].prefix_cache_error,
        "packed_max_rel_error": packed_error(readers[False], docs, min(args.batch_tokens, 1024)),
        "variants": {},
    }
    result["variants"]["padded_prefix_cache"] = measure(readers[True], sae, docs, args, packed=False)
    result["variants"]["padded_full"] = measure(readers[False], sae, docs, args, packed=False)
    result["variants"]["packed_full"] = measure(readers[False], sae, docs, args, packed=True)
    v = result["variants"]
    result["prefix_cache_speedup"] = round(v["padded_prefix_cache"]["bare_content_tok_s"]
                                           / v["padded_full"]["bare_content_tok_s"], 3)
    result["packed_over_padded_full"] = round(v["packed_full"]["bare_content_tok_s"]
                                              / v["padded_full"]["bare_content_tok_s"], 3)
    result["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)
    if args.json:
        print(json.dumps(result))
    else:
        for k, val in result.items():
            if k != "variants":
                print(f"{k:>28}  {val}")
        keys = list(v["padded_full"])
        print(f"{'':>28}  " + "  ".join(f"{name:>20}" for name in v))
        for k in keys:
            print(f"{k:>28}  " + "  ".join(f"{str(v[name].get(k, '-')):>20}" for name in v))
    sys.stdout.flush()
    return result


if __name__ == "__main__":
    main()
