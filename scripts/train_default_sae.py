"""Reproduce the SAE shipped in ``saeembed/data/default_sae/`` end to end.

Steps (each resumable / skippable):
  1. ``--probe``: pick the reader layer by linear-probe accuracy of mean-pooled hidden states
     (AG News topic, Amazon sentiment) at several layers of SmolLM2-135M-Instruct.
  2. cache pooled (content, non-template) token activations from a mix of real corpora;
  3. train a TopK SAE with AuxK, hold out 5 % of tokens for FVU / L0 / dead fraction;
  4. label every latent offline (c-TF-IDF over its top-activating contexts);
  5. write RECIPE.md with the command, data, hyper-parameters and measured metrics.

    python scripts/train_default_sae.py --probe --cache /tmp/sae_cache --out saeembed/data/default_sae

The shared corpora live in ``../shared/datasets``; they are read, never shipped.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import polars as pl
import torch

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "datasets"

# (dataset, text column, docs to take, max chars per doc): a mix of news, reviews, social media,
# instruction-following LLM answers and human-vs-LLM prose, so latents cover the styles users encode.
MIX = [
    ("ag_news_test", "text", 1800, 600),
    ("amazon_multidomain_sentiment", "text", 1200, 1200),
    ("goemotions", "text", 3000, 400),
    ("tweeteval", "text", 3000, 400),
    ("alpacaeval_model_outputs", "output", 700, 1500),
    ("m4_human_vs_llama2", "text", 300, 1500),
]


def probe_layers(layers: list[int], n_docs: int = 300, max_chars: int = 400, seed: int = 0) -> dict:
    """Linear-probe accuracy (5-fold logistic regression) of mean-pooled hidden states per layer.

    Why: the SAE can only expose concepts the layer represents linearly; the layer where topic and
    sentiment are best linearly decodable is a good reading point for document embeddings.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from saeembed.reader import Reader, batches_by_budget, pad_batch

    reader = Reader(None, layer=max(layers), device="cpu")
    blocks = reader.model.layers
    captured: dict[int, torch.Tensor] = {}
    hooks = [blocks[L].register_forward_hook(
        lambda m, a, o, L=L: captured.__setitem__(L, o[0] if isinstance(o, (tuple, list)) else o))
        for L in layers if L != reader.layer]  # the reader's own hook stops the forward at its layer
    tasks = {}
    ag = pl.read_parquet(SHARED / "ag_news_test" / "data.parquet").sample(n_docs, seed=seed)
    tasks["ag_news_topic"] = (ag["text"].to_list(), ag["label"].to_list())
    am = pl.read_parquet(SHARED / "amazon_multidomain_sentiment" / "data.parquet").sample(n_docs, seed=seed)
    tasks["amazon_sentiment"] = (am["text"].to_list(), am["sentiment"].to_list())
    tasks["amazon_domain"] = (am["text"].to_list(), am["domain"].to_list())
    feats: dict[str, dict[int, np.ndarray]] = {}
    t0 = time.time()
    for task, (texts, _) in tasks.items():
        if task == "amazon_domain":
            feats[task] = feats["amazon_sentiment"]
            continue
        wins = [w for i, t in enumerate(texts) for w in reader.windows(t[:max_chars], i)]
        out = {L: np.zeros((len(texts), reader.hidden_size), np.float32) for L in layers}
        for batch in batches_by_budget(wins, 4096):
            ids, attn, pool = pad_batch(batch, reader.pad_id)
            captured[reader.layer] = reader.hidden_states(ids, attn)
            for L in layers:
                h = captured[L].float()
                m = pool.unsqueeze(-1).float()
                mean = (h * m).sum(1) / m.sum(1).clamp(min=1)
                for j, w in enumerate(batch):
                    out[L][w.doc] = mean[j].numpy()
        feats[task] = out
    for h in hooks:
        h.remove()
    result: dict = {"n_docs": n_docs, "max_chars": max_chars, "forward_s": round(time.time() - t0, 1), "acc": {}}
    for task, (_, y) in tasks.items():
        result["acc"][task] = {}
        for L in layers:
            clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
            acc = cross_val_score(clf, feats[task][L], y, cv=5).mean()
            result["acc"][task][L] = round(float(acc), 3)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--probe", action="store_true", help="run the layer probe first and print it")
    ap.add_argument("--probe-only", action="store_true")
    ap.add_argument("--probe-layers", default="6,9,12,15,18,21")
    ap.add_argument("--layer", type=int, default=None, help="reader layer (default: best probe layer or 15)")
    ap.add_argument("--cache", default="/tmp/saeembed_default_cache")
    ap.add_argument("--out", default=str(REPO / "saeembed" / "data" / "default_sae"))
    ap.add_argument("--max-tokens", type=int, default=600_000)
    ap.add_argument("--d-sae", type=int, default=6144)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--epochs", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--dead-tokens", type=int, default=200_000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", help="reader dtype while caching: bf16 cached 3.5x faster on a CPU with "
                    "AVX512-BF16 (benchmarks/cpu_bf16.py); the cache stores fp16 either way")
    ap.add_argument("--mix-scale", type=float, default=1.0,
                    help="multiply the documents taken from every corpus of MIX (capped at the corpus size)")
    ap.add_argument("--stage", choices=["all", "cache", "train", "labels", "recipe"], default="all")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    probe_path = Path(args.cache) / "probe.json"
    if args.probe or args.probe_only:
        layers = [int(x) for x in args.probe_layers.split(",")]
        res = probe_layers(layers)
        Path(args.cache).mkdir(parents=True, exist_ok=True)
        probe_path.write_text(json.dumps(res, indent=2))
        print(json.dumps(res, indent=2), flush=True)
        if args.probe_only:
            return
    _run_pipeline(args, out, probe_path)


def _rows(name: str) -> int:
    return pl.scan_parquet(SHARED / name / "data.parquet").select(pl.len()).collect().item()


def _best_layer(probe_path: Path) -> int | None:
    if not probe_path.exists():
        return None
    acc = json.loads(probe_path.read_text())["acc"]
    layers = list(next(iter(acc.values())).keys())
    return int(max(layers, key=lambda L: sum(t[L] for t in acc.values())))


def _run_pipeline(args, out: Path, probe_path: Path) -> None:
    from saeembed.train import CorpusSpec, cache_activations

    layer = args.layer if args.layer is not None else (_best_layer(probe_path) or 15)
    specs = [CorpusSpec(str(SHARED / name / "data.parquet"), col, min(int(n * args.mix_scale), _rows(name)), chars)
             for name, col, n, chars in MIX]
    cache = Path(args.cache) / f"acts_L{layer}"
    timings_path = Path(args.cache) / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    if args.stage in ("all", "cache"):
        t0 = time.time()
        man = cache_activations(specs, cache, reader=None, layer=layer, device="cpu", dtype=args.dtype,
                                max_tokens=args.max_tokens, chunk_docs=256)
        timings["cache_s_last_run"] = round(time.time() - t0, 1)
        timings_path.write_text(json.dumps(timings))
        print(json.dumps({k: man[k] for k in ("n_tokens", "n_chunks", "layer")}), flush=True)
    if args.stage in ("all", "train"):
        from saeembed.train import TrainConfig, save_trained_sae, train_topk_sae

        cfg = TrainConfig(d_sae=args.d_sae, k=args.k, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                          device=args.device, threads=args.threads, log_every=25, dead_tokens=args.dead_tokens,
                          extra={"recipe_script": "scripts/train_default_sae.py",
                                 "layer_probe": json.loads(probe_path.read_text()) if probe_path.exists() else None})
        sae, metrics = train_topk_sae(cache, cfg, progress=lambda m: print(m, flush=True))
        save_trained_sae(sae, out)
        (Path(args.cache) / "train_metrics.json").write_text(json.dumps(metrics, indent=2))
        print(json.dumps(metrics["heldout"]), flush=True)
    if args.stage in ("all", "train", "labels"):
        from transformers import AutoTokenizer

        from saeembed.labels.offline import label_latents, write_labels
        from saeembed.reader import resolve_reader
        from saeembed.sae.formats import load_saelens
        from saeembed.train import ActivationCache

        t0 = time.time()
        tok = AutoTokenizer.from_pretrained(resolve_reader(None)[1])
        labels = label_latents(load_saelens(out), ActivationCache(cache), tok,
                               progress=lambda m: print(m, flush=True))
        write_labels(labels, out / "labels.parquet")
        timings["labels_s"] = round(time.time() - t0, 1)
        timings_path.write_text(json.dumps(timings))
    if args.stage in ("all", "train", "labels", "recipe"):
        write_recipe(out, cache, probe_path, timings, args)


EXAMPLES = 10


def write_recipe(out: Path, cache: Path, probe_path: Path, timings: dict, args) -> None:
    """RECIPE.md: command, data, hyper-parameters, measured metrics and example latents."""
    from saeembed.sae.formats import load_saelens

    sae = load_saelens(out)
    meta = sae.cfg.extra["saeembed"]
    rec, met = meta["recipe"], meta["metrics"]
    man = json.loads((cache / "manifest.json").read_text())
    labels = pl.read_parquet(out / "labels.parquet")
    live = labels.filter(pl.col("label") != "(dead)")
    # ten examples: the best-scoring latents among those that fire on 0.05 %..2 % of tokens
    ex = (live.filter(pl.col("density").is_between(5e-4, 2e-2)).sort("score", descending=True)
          .unique(subset="label", keep="first", maintain_order=True).head(40)
          .sample(EXAMPLES, seed=0, shuffle=True) if live.height else live).sort("feature_id")
    probe = json.loads(probe_path.read_text()) if probe_path.exists() else None
    h = met["heldout"]
    lines = [
        "# Default SAE: recipe and measurements", "",
        f"TopK sparse autoencoder on **{man['reader']}**, block {man['layer']} output "
        f"(`{man['hook_name']}`), trained by `saeembed.train` (TopK + AuxK, Gao et al. 2024).", "",
        "## Reproduce", "", "```",
        f"python scripts/train_default_sae.py --probe --layer {man['layer']} --cache /tmp/saeembed_default_cache \\",
        f"    --max-tokens {args.max_tokens} --d-sae {rec['d_sae']} --k {rec['k']} --epochs {rec['epochs']} "
        f"--batch-size {rec['batch_size']} --dtype {man.get('dtype', 'float32')} --mix-scale {args.mix_scale}",
        "```", "",
        "Same thing from the CLI (one corpus flag per file): `saeembed train-sae --corpus PATH:COL ... --layer "
        f"{man['layer']} --d-sae {rec['d_sae']} --k {rec['k']} --out DIR`.", "",
        "## Data", "",
        f"{man['n_tokens']:,} content tokens (chat-template and special tokens excluded, as when encoding) "
        f"from {len(man['corpora'])} corpora in `../shared/datasets`, documents sampled with seed {man['seed']} "
        "and interleaved round-robin:", "",
        "| corpus | text column | docs sampled | chars per doc |", "|---|---|---|---|",
    ]
    for c in man["corpora"]:
        lines.append(f"| {Path(c['path']).parent.name} | {c['text_col']} | {c['max_docs']} | {c['max_chars']} |")
    lines += ["", f"Held out: {rec['heldout_frac']:.0%} of documents (hash of the document index); "
              f"{h.get('n_tokens', 0):,} held-out tokens. Training tokens: {met['train_tokens']:,}.", "",
              "## Hyper-parameters", "", "| name | value |", "|---|---|"]
    for k_, v in rec.items():
        lines.append(f"| {k_} | {v} |")
    lines += ["", "## Measured (held-out tokens)", "",
              "| metric | value |", "|---|---|",
              f"| FVU (fraction of variance unexplained) | {h['fvu']:.4f} |",
              f"| L0 (active latents per token) | {h['l0']:.2f} |",
              f"| dead fraction (never fires on held-out tokens) | {h['dead_frac']:.4f} |",
              f"| dead fraction at end of training (no fire in last {rec['dead_tokens']:,} tokens) | "
              f"{met['train_dead_frac']:.4f} |",
              f"| latents with no fire on any cached token (label `(dead)`) | {labels.height - live.height} of "
              f"{labels.height} |",
              f"| optimizer steps / epochs | {met['steps']} / {met['epochs']} |",
              f"| training wall time (2 CPU cores) | {met['train_wall_s']:.0f} s |",
              f"| caching wall time | {timings.get('cache_s', timings.get('cache_s_last_run', 'n/a'))} s |",
              f"| labelling wall time | {timings.get('labels_s', 'n/a')} s |",
              f"| weights file (fp16) | {(out / 'sae_weights.safetensors').stat().st_size / 2**20:.1f} MiB |", ""]
    if probe:
        acc = probe["acc"]
        layers = list(next(iter(acc.values())).keys())
        lines += ["## Layer choice", "",
                  f"Linear probe (5-fold logistic regression, standardised features, C=0.1) on mean-pooled "
                  f"content-token hidden states, {probe['n_docs']} documents per task, first {probe['max_chars']} "
                  "characters:", "",
                  "| task | " + " | ".join(f"L{L}" for L in layers) + " |",
                  "|---|" + "---|" * len(layers)]
        for task, row in acc.items():
            lines.append(f"| {task} | " + " | ".join(f"{row[L]:.3f}" for L in layers) + " |")
        lines += ["", LAYER_NOTE, ""]
    lines += ["## Ten example latents", "",
              "Labels are offline c-TF-IDF terms of the top-activating contexts (`saeembed.labels.offline`); "
              "score = share of the latent's top contexts containing its best term; the activating token is in ⟦ ⟧.",
              "",
              "| latent | label | score | density | top context |", "|---|---|---|---|---|"]
    for r in ex.iter_rows(named=True):
        ctx = r["description"].split("top context: ", 1)[-1].replace("|", "\\|")
        label = r["label"].replace("|", "/")
        lines.append(f"| {r['feature_id']} | {label} | {r['score']:.2f} | {r['density']:.4f} | {ctx} |")
    (out / "RECIPE.md").write_text("\n".join(lines) + "\n")


LAYER_NOTE = ("Topic (AG News) and product domain are decodable about equally well at every probed layer; "
              "sentiment rises from layer 6 to 18 and then plateaus. Layer 18 (60 % depth, like the reference "
              "SAEs: Llama-3.1-8B layer 19/32, Llama-3.3-70B layer 50/80) keeps the sentiment gain of the late "
              "layers while running 3 blocks fewer than layer 21. Differences of ±0.03 are within the noise of "
              "300-document probes.")


if __name__ == "__main__":
    main()
