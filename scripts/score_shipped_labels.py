"""Score, and where it measurably helps relabel, the labels shipped with the default and the doc SAE.

Every shipped label gets its detection AUC (``saeembed.labels.score``) as ``score``, measured on
documents of the training mix that the SAE's labelling never read. Readable offline candidates
(``saeembed.labels.readable``: the contexts' shared phrase, the nearest corpus words, the
distinctive words of their documents) are written from each latent's strongest contexts and kept
as extra rows only where they beat the shipped label on the held-out ``select`` half; the scores
written are all measured on the ``score`` half, which neither wrote nor chose any label. Each latent
also gets a ``context`` row (its strongest context), shown where no label reaches the floor.

    python scripts/score_shipped_labels.py --sae default --work /tmp/score_default
    python scripts/score_shipped_labels.py --sae doc --work /tmp/score_doc

Re-running with the same ``--work`` reuses the codes read there. The shipped c-TF-IDF rows keep
their text (so the shipped label embeddings stay valid); only their score changes. RECIPE.md gets a
"Label scores" section with the distribution.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "datasets"
SECTION = "## Label scores"


def heldout_texts(sae_name: str, n_docs: int, seed: int = 1) -> list[str]:
    """Documents of the SAE's training mix, in the mix's proportions, that its labelling did not read
    (the token SAE: outside the seed-0 training sample; the doc SAE read every document, so these are
    merely a fresh sample)."""
    import importlib.util

    from saeembed.sae.train import CorpusSpec, load_documents

    script = REPO / "scripts" / ("train_default_sae.py" if sae_name == "default" else "train_doc_sae.py")
    spec = importlib.util.spec_from_file_location("recipe", script)
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)  # type: ignore[union-attr]
    mix = recipe.MIX
    seen = set()
    if sae_name == "default":
        seen = set(load_documents([CorpusSpec(str(SHARED / n / "data.parquet"), c, m, ch) for n, c, m, ch in mix]))
    weights = np.array([m or 1000 for _, _, m, _ in mix], float)
    out: list[str] = []
    for i, (name, col, _, chars) in enumerate(mix):
        texts = [t[:chars] for t in pl.read_parquet(SHARED / name / "data.parquet", columns=[col])[col].to_list()
                 if t and t.strip()]
        rng = np.random.default_rng(seed * 1000 + i)
        want = int(round(n_docs * weights[i] / weights.sum()))
        out += [texts[j] for j in rng.permutation(len(texts)) if texts[j][:chars] not in seen][:want]
    order = np.random.default_rng(seed).permutation(len(out))  # interleave the corpora
    return [out[int(j)] for j in order]


def read_codes(sae_name: str, texts: list[str], max_tokens: int, work: Path):
    """(codes, contexts kwargs) of ``texts``, cached in ``work``."""
    from saeembed.labels.contexts import document_codes, encode_tokens
    from saeembed.sae import open_sae

    path = work / "codes.pkl"
    if path.exists():
        return pickle.loads(path.read_bytes())
    sae = open_sae(sae_name).sae
    if sae_name == "doc":
        from scipy import sparse

        from saeembed.labels.score import embed_texts
        from saeembed.labels_doc import doc_codes

        codes = document_codes(sparse.csr_matrix(doc_codes(sae, embed_texts(texts))))
    else:
        from saeembed.reader import make_reader
        from saeembed.sae.train import read_hidden_states

        reader = make_reader(sae.cfg.model_name, layer=sae.cfg.hook_layer)

        def chunks():
            read = 0
            for c in read_hidden_states(reader, texts, chunk_docs=32):
                yield c
                read += len(c["tok"])
                print(f"read {read:,} tokens", flush=True)
                if read >= max_tokens:
                    return

        codes = encode_tokens(sae, chunks())
    path.write_bytes(pickle.dumps(codes))
    return codes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sae", choices=["default", "doc"], default="default")
    ap.add_argument("--work", type=Path, required=True, help="folder for the codes read (reused by re-runs)")
    ap.add_argument("--docs", type=int, default=None, help="held-out documents read (default: 2400 / 4000)")
    ap.add_argument("--tokens", type=int, default=40_000, help="token windows read and embedded at most")
    ap.add_argument("--out", type=Path, default=None, help="the SAE folder to write (default: the shipped one)")
    ap.add_argument("--dry-run", action="store_true", help="print the distribution, write nothing")
    args = ap.parse_args()
    import torch
    from transformers import AutoTokenizer

    from saeembed.labels.contexts import draw_contexts
    from saeembed.labels.readable import candidates
    from saeembed.labels.score import FLOOR, describe, detection_scores, embed_windows
    from saeembed.reader import resolve_reader
    from saeembed.store import CONTEXT_LABEL_SOURCE

    torch.set_num_threads(2)
    out = args.out or REPO / "saeembed" / "data" / ("default_sae" if args.sae == "default" else "doc_sae")
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    texts = heldout_texts(args.sae, args.docs or (2400 if args.sae == "default" else 4000))
    codes = read_codes(args.sae, texts, args.tokens, args.work)
    t_read = time.time() - t0
    if args.sae == "doc":
        ctx = draw_contexts(codes, lambda _: "", max_bank=codes.n_tokens, texts=texts)
    else:
        tok = AutoTokenizer.from_pretrained(resolve_reader(None)[1])
        ctx = draw_contexts(codes, tok.decode, max_bank=codes.n_tokens)
    t1 = time.time()
    windows = embed_windows(ctx, explain=True)
    t_embed = time.time() - t1
    shipped = pl.read_parquet(out / "labels.parquet")
    shipped = shipped.filter(~pl.col("label_source").is_in([CONTEXT_LABEL_SOURCE, "offline-phrase", "offline-words",
                                                             "offline-docwords"]))
    live = shipped.filter(pl.col("label") != "(dead)")
    cands = candidates(ctx, windows, texts, live["feature_id"].to_list())
    pool = pl.concat([live.select("feature_id", "label", "label_source"), cands])
    pool = pool.with_columns(pl.Series("select", detection_scores(ctx, windows, pool, "select")),
                             pl.Series("score", detection_scores(ctx, windows, pool, "score")))
    base = pool.filter(pl.col("label_source") == live["label_source"][0]).select(
        "feature_id", pl.col("select").alias("base_select"))
    better = (pool.filter(pl.col("label_source") != live["label_source"][0]).join(base, on="feature_id")
              .filter(pl.col("select") > pl.col("base_select"))
              .sort(["feature_id", "select"], descending=[False, True]).unique("feature_id", keep="first",
                                                                               maintain_order=True))
    scores = dict(zip(pool.filter(pl.col("label_source") == live["label_source"][0])["feature_id"].to_list(),
                      pool.filter(pl.col("label_source") == live["label_source"][0])["score"].to_list()))
    rescored = shipped.with_columns(pl.Series("score", [scores.get(f) if lab != "(dead)" else None for f, lab in
                                                        zip(shipped["feature_id"], shipped["label"])], pl.Float64)
                                    .fill_nan(None))
    density = dict(zip(shipped["feature_id"].to_list(), shipped["density"].to_list()))
    extra = better.select("feature_id", "label", "label_source", pl.col("score").fill_nan(None),
                          pl.col("feature_id").replace_strict(density, default=None).alias("density"),
                          pl.lit("offline, written from the latent's strongest contexts; kept because it scored above "
                                 "the c-TF-IDF label on held-out windows").alias("description"))
    contexts = [(j, ctx.shown_context(j)) for j in sorted(ctx.explain)]
    ctx_rows = pl.DataFrame({"feature_id": [j for j, c in contexts if c], "label": [c for _, c in contexts if c]},
                            schema={"feature_id": pl.Int32, "label": pl.String}).with_columns(
        pl.lit(CONTEXT_LABEL_SOURCE).alias("label_source"), pl.lit(None, pl.Float64).alias("score"),
        pl.col("feature_id").replace_strict(density, default=None).alias("density"),
        pl.lit("the latent's strongest context in documents its labelling did not read").alias("description"))
    final = pl.concat([rescored, extra, ctx_rows], how="diagonal_relaxed").sort("feature_id", "label_source")
    # the label each latent shows: best score at or above the floor, else the context
    best = (pl.concat([rescored, extra], how="diagonal_relaxed").filter(pl.col("score").is_not_null())
            .group_by("feature_id").agg(pl.col("score").max()))
    stats = {"documents": len(texts), "tokens": codes.n_tokens, "read_s": round(t_read), "embed_s": round(t_embed),
             "windows": len(windows.rows), "floor": FLOOR,
             "shipped": describe(rescored["score"]), "best": describe(best["score"]),
             "replaced": better.group_by("label_source").len().sort("label_source").to_dicts(),
             "candidates": pool.group_by("label_source").agg(pl.col("score").median()).sort("label_source").to_dicts()}
    print(json.dumps(stats, indent=1), flush=True)
    (args.work / "stats.json").write_text(json.dumps(stats, indent=1))
    pool.write_parquet(args.work / "candidates.parquet")
    if args.dry_run:
        return
    final.write_parquet(out / "labels.parquet", compression="zstd")
    write_section(out / "RECIPE.md", stats, better, rescored, ctx_rows, args)


def write_section(recipe: Path, stats: dict, better: pl.DataFrame, rescored: pl.DataFrame, ctx_rows: pl.DataFrame,
                  args) -> None:
    """Replace RECIPE.md's "Label scores" section with this run's figures."""
    from saeembed.labels.score import FLOOR

    s, b = stats["shipped"], stats["best"]
    lines = [SECTION, "",
             f"`score` is the detection AUC (`saeembed.labels.score`): how well a label's MiniLM similarity tells "
             f"windows where its latent fires from random windows where it does not, on {stats['documents']:,} "
             f"documents of the training mix that labelling never read ({stats['tokens']:,} token windows; "
             "0.5 = chance, 1 = perfect). Reproduce: "
             f"`python scripts/score_shipped_labels.py --sae {args.sae} --work DIR`.", "",
             "| labels | scored | at or above the floor "
             f"({FLOOR}) | p10 | p25 | median | p75 | p90 |", "|---|---|---|---|---|---|---|---|"]
    for name, d in (("shipped c-TF-IDF / distinctive-words label", s), ("best label per latent", b)):
        lines.append(f"| {name} | {d['n']} | {d['above_floor']:.1%} | {d['p10']:.3f} | {d['p25']:.3f} | "
                     f"{d['p50']:.3f} | {d['p75']:.3f} | {d['p90']:.3f} |")
    kinds = ", ".join(f"{r['label_source']} {r['len']}" for r in stats["replaced"])
    lines += ["", f"Readable offline labels kept where they scored better on the held-out select half: {kinds}. "
              f"Latents whose best label stays below the floor show their strongest context "
              f"({ctx_rows.height} context rows).", ""]
    text = recipe.read_text()
    head = text.split(SECTION)[0].rstrip() + "\n\n" if SECTION in text else text.rstrip() + "\n\n"
    rest = text.split(SECTION, 1)[1].split("\n## ", 1) if SECTION in text else ["", ""]
    tail = ("\n## " + rest[1]) if len(rest) > 1 else ""
    recipe.write_text(head + "\n".join(lines) + tail)


if __name__ == "__main__":
    main()
