"""Score, and where it measurably helps relabel, the labels shipped with the default and the doc SAE.

Every shipped label gets its detection AUC (``saeembed.labels.score``) as ``score``, measured on
documents of the training mix that the SAE's labelling never read. Readable offline candidates
(``saeembed.labels.readable``: the contexts' shared phrase, the nearest corpus words, the
distinctive words of their documents) are written from each latent's strongest contexts and kept
in place of the shipped label only where they beat it on the held-out ``select`` half; the scores
written are all measured on the ``score`` half, which neither wrote nor chose any label. Each latent
also gets a ``context`` row (its strongest context), shown where no label reaches the floor.

    python scripts/score_shipped_labels.py --sae default --work /tmp/score_default
    python scripts/score_shipped_labels.py --sae doc --work /tmp/score_doc

Re-running with the same ``--work`` reuses the codes read there. Each latent keeps one label (the
original, or the candidate that replaced it) and one context; the shipped label embeddings are
regenerated for them. RECIPE.md gets a "Label scores" section with the distribution and the null.
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
ORIGINAL = "offline-ctfidf"  # the label source the SAE's training script writes


def heldout_texts(sae_name: str, n_docs: int, seed: int = 1, shared: Path = SHARED) -> list[str]:
    """Documents of the SAE's training mix, in the mix's proportions, that its labelling did not read
    (the token SAE: outside the seed-0 training sample; the doc SAE read every document, so these are
    merely a fresh sample)."""
    import importlib.util

    from saeembed.labels.contexts import DOC_CHARS
    from saeembed.train import CorpusSpec, load_documents

    script = REPO / "scripts" / ("train_default_sae.py" if sae_name == "default" else "train_doc_sae.py")
    spec = importlib.util.spec_from_file_location("recipe", script)
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)  # type: ignore[union-attr]
    mix = recipe.MIX
    seen = set()
    if sae_name == "default":
        seen = set(load_documents([CorpusSpec(str(shared / n / "data.parquet"), c, m, ch) for n, c, m, ch in mix]))
    weights = np.array([m or 1000 for _, _, m, _ in mix], float)
    out: list[str] = []
    for i, (name, col, _, chars) in enumerate(mix):
        texts = [t[:chars] for t in pl.read_parquet(shared / name / "data.parquet", columns=[col])[col].to_list()
                 if t and t.strip()]
        if sae_name == "doc":  # a document is scored by its first DOC_CHARS characters: the SAE reads those too
            texts = [" ".join(t.split())[:DOC_CHARS] for t in texts]
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

        from saeembed.labels.doc_sae import doc_codes
        from saeembed.labels.score import embed_texts

        codes = document_codes(sparse.csr_matrix(doc_codes(sae, embed_texts(texts))))
    else:
        from saeembed.reader import make_reader
        from saeembed.train import read_hidden_states

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
    ap.add_argument("--data", type=Path, default=SHARED, help="the shared datasets folder")
    ap.add_argument("--work", type=Path, required=True, help="folder for the codes read (reused by re-runs)")
    ap.add_argument("--docs", type=int, default=None, help="held-out documents read (default: 2400 / 4000)")
    ap.add_argument("--tokens", type=int, default=40_000, help="token windows read and embedded at most")
    ap.add_argument("--out", type=Path, default=None, help="the SAE folder to write (default: the shipped one)")
    ap.add_argument("--labels", type=Path, default=None,
                    help="the labels the SAE's training script wrote (default: OUT/labels.parquet; after a run, "
                         "the work folder's copy of them)")
    ap.add_argument("--dry-run", action="store_true", help="print the distribution, write nothing")
    args = ap.parse_args()
    import torch
    from transformers import AutoTokenizer

    from saeembed.labels.contexts import draw_contexts
    from saeembed.labels.readable import candidates
    from saeembed.labels.score import FLOOR, describe, detection_scores
    from saeembed.reader import resolve_reader
    from saeembed.sae import open_sae
    from saeembed.store import CONTEXT_LABEL_SOURCE

    torch.set_num_threads(2)
    out = args.out or REPO / "saeembed" / "data" / ("default_sae" if args.sae == "default" else "doc_sae")
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    texts = heldout_texts(args.sae, args.docs or (2400 if args.sae == "default" else 4000), shared=args.data)
    codes = read_codes(args.sae, texts, args.tokens, args.work)
    t_read = time.time() - t0
    if args.sae == "doc":
        ctx = draw_contexts(codes, lambda _: "", max_bank=codes.n_tokens, texts=texts)
    else:
        tok = AutoTokenizer.from_pretrained(resolve_reader(None)[1])
        ctx = draw_contexts(codes, tok.decode, max_bank=codes.n_tokens)
    t1 = time.time()
    windows = cached_windows(ctx, args.work / "windows.npz")
    t_embed = time.time() - t1
    kept_original = args.work / "original_labels.parquet"
    source = args.labels or (kept_original if kept_original.exists() else out / "labels.parquet")
    shipped = pl.read_parquet(source).filter(pl.col("label_source") == ORIGINAL)
    d_sae = open_sae(args.sae).sae.d_sae
    if shipped["feature_id"].n_unique() != d_sae:
        raise SystemExit(f"{source} holds {ORIGINAL!r} labels for {shipped['feature_id'].n_unique()} of {d_sae} "
                         "latents; pass the training script's labels.parquet with --labels")
    if not kept_original.exists():
        shipped.write_parquet(kept_original)
    live = shipped.filter(pl.col("label") != "(dead)")
    cands = candidates(ctx, windows, texts, live["feature_id"].to_list())
    pool = pl.concat([live.select("feature_id", "label", "label_source"), cands])
    pool = pool.with_columns(pl.Series("select", detection_scores(ctx, windows, pool, "select")).fill_nan(None),
                             pl.Series("score", detection_scores(ctx, windows, pool, "score")).fill_nan(None))
    base = pool.filter(pl.col("label_source") == ORIGINAL)
    # a candidate replaces the shipped label only where it scores higher on the select half
    better = (pool.filter(pl.col("label_source") != ORIGINAL)
              .join(base.select("feature_id", pl.col("select").alias("base_select")), on="feature_id")
              .filter(pl.col("select") > pl.col("base_select"))
              .sort(["feature_id", "select"], descending=[False, True]).unique("feature_id", keep="first",
                                                                               maintain_order=True))
    meta = shipped.select("feature_id", "density", "description")
    kept = (base.join(better.select("feature_id"), on="feature_id", how="anti")
            .join(meta, on="feature_id").select("feature_id", "label", "label_source", "score", "density",
                                                "description"))
    new = better.join(meta.select("feature_id", "density"), on="feature_id").select(
        "feature_id", "label", "label_source", "score", "density",
        pl.lit("offline, written from the latent's strongest contexts; it scored above the c-TF-IDF label "
               "on held-out windows").alias("description"))
    dead = shipped.filter(pl.col("label") == "(dead)").with_columns(pl.lit(None, pl.Float64).alias("score"))
    contexts = [(j, ctx.shown_context(j)) for j in sorted(ctx.explain)]
    density = dict(zip(shipped["feature_id"].to_list(), shipped["density"].to_list()))
    ctx_rows = pl.DataFrame({"feature_id": [j for j, c in contexts if c], "label": [c for _, c in contexts if c]},
                            schema={"feature_id": pl.Int32, "label": pl.String}).with_columns(
        pl.lit(CONTEXT_LABEL_SOURCE).alias("label_source"), pl.lit(None, pl.Float64).alias("score"),
        pl.col("feature_id").replace_strict(density, default=None).alias("density"),
        pl.lit("the latent's strongest context in documents its labelling did not read").alias("description"))
    labels = pl.concat([kept, new, dead], how="diagonal_relaxed")
    final = pl.concat([labels, ctx_rows], how="diagonal_relaxed").sort("feature_id", "label_source")
    null = null_scores(ctx, windows, live)
    stats = {"documents": len(texts), "tokens": codes.n_tokens, "read_s": round(t_read), "embed_s": round(t_embed),
             "windows": len(windows.rows), "floor": FLOOR, "null": describe(null),
             "null_p95": float(np.nanquantile(null, 0.95)),
             "shipped": describe(base["score"]), "shown": describe(labels["score"]),
             "replaced": better.group_by("label_source").len().sort("label_source").to_dicts(),
             "candidates": pool.group_by("label_source").agg(pl.col("score").median()).sort("label_source").to_dicts()}
    print(json.dumps(stats, indent=1), flush=True)
    (args.work / "stats.json").write_text(json.dumps(stats, indent=1))
    pool.write_parquet(args.work / "candidates.parquet")
    if args.dry_run:
        return
    final.write_parquet(out / "labels.parquet", compression="zstd")
    ship_label_embeddings(out, labels)
    write_section(out / "RECIPE.md", stats, final, args.sae)


def cached_windows(ctx, path: Path):
    """The window embeddings of every bank and explain row, kept in ``path`` for re-runs."""
    from saeembed.labels.score import WindowEmbeddings, embed_windows

    if not path.exists():
        windows = embed_windows(ctx, explain=True)
        np.savez(path, rows=windows.rows, vectors=windows.vectors.astype(np.float16))
    with np.load(path) as z:  # the precision it is kept at, so every run agrees
        return WindowEmbeddings.from_arrays(z["rows"], z["vectors"])


def null_scores(ctx, windows, live: pl.DataFrame) -> np.ndarray:
    """Scores of the shipped labels handed to random other latents: the null the floor is set against."""
    from saeembed.labels.score import detection_scores

    rng = np.random.default_rng(0)
    shuffled = live.select("feature_id", pl.Series("label", live["label"].to_numpy()[rng.permutation(live.height)]))
    return detection_scores(ctx, windows, shuffled, "score")


def ship_label_embeddings(out: Path, labels: pl.DataFrame) -> None:
    """The label embeddings label search computes first, shipped so the first search is instant: one file
    per label source, keyed by the digest of its labels in the order search reads them."""
    import hashlib

    from saeembed.labels.search import embed_labels, label_embedding_file

    for old in out.glob("label_embeddings_*.npy"):
        old.unlink()
    live = labels.filter(pl.col("label").is_not_null() & (pl.col("label") != "(dead)"))
    for _, grp in live.sort("label_source", "feature_id").group_by("label_source", maintain_order=True):
        texts = grp["label"].to_list()
        digest = hashlib.sha1("\x00".join(texts).encode()).hexdigest()
        np.save(out / label_embedding_file(digest), embed_labels(texts).astype(np.float16))


def write_section(recipe: Path, stats: dict, final: pl.DataFrame, sae_name: str) -> None:
    """Replace RECIPE.md's "Label scores" section (or append one) with this run's figures; ``final`` is the
    labels.parquet written, to say which row analyses show per latent."""
    from saeembed.labelrule import CONTEXT_LABEL_SOURCE, shown_labels
    from saeembed.labels.score import FLOOR

    s, b, n = stats["shipped"], stats["shown"], stats["null"]
    shown = shown_labels(final)
    is_context = pl.col("label_source") == CONTEXT_LABEL_SOURCE
    n_context = shown.filter(is_context).height
    n_above = shown.filter(~is_context & (pl.col("score") >= FLOOR)).height
    n_unscored = shown.filter(~is_context & pl.col("score").is_null()).height
    lines = [SECTION, "",
             f"`score` is the detection AUC (`saeembed.labels.score`): how well a label's MiniLM similarity tells "
             "windows where its latent fires strongly (top fifth of its activations) from random windows where it "
             f"does not, on {stats['documents']:,} documents of the training mix that labelling never read "
             f"({stats['tokens']:,} windows; 0.5 = chance, 1 = perfect). The floor, {FLOOR}, is about the 95th "
             f"percentile of the null, each latent scored with the label of a random other latent "
             f"({stats['null_p95']:.3f} here). Reproduce: "
             f"`python scripts/score_shipped_labels.py --sae {sae_name} --work DIR`.", "",
             "| labels | scored | at or above the floor "
             f"({FLOOR}) | p10 | p25 | median | p75 | p90 |", "|---|---|---|---|---|---|---|---|"]
    for name, d in (("null: a random other latent's label", n), ("c-TF-IDF / distinctive-words label", s),
                    ("shipped label (readable candidate where it scored better)", b)):
        lines.append(f"| {name} | {d['n']:,} | {d['above_floor']:.1%} | {d['p10']:.3f} | {d['p25']:.3f} | "
                     f"{d['p50']:.3f} | {d['p75']:.3f} | {d['p90']:.3f} |")
    kinds = ", ".join(f"{r['label_source']} {r['len']:,}" for r in stats["replaced"])
    lines += ["", f"Readable offline labels replace the original where they scored better on the held-out select "
              f"half (the scores above are on the other half): {kinds}. Each latent also ships its strongest "
              f"context (source `context`). Analyses show, of the {shown.height:,} latents: a label at or above "
              f"the floor for {n_above:,}, an unscored label (too few strong held-out windows to measure) for "
              f"{n_unscored:,}, and the strongest context, where the label was measured below the floor, for "
              f"{n_context:,}.", ""]
    text = recipe.read_text()
    if SECTION in text:
        before, after = text.split(SECTION, 1)
        rest = after.split("\n## ", 1)
        tail = ("\n## " + rest[1]) if len(rest) > 1 else ""
    else:
        before, tail = text, ""
    recipe.write_text(before.rstrip() + "\n\n" + "\n".join(lines) + tail)


if __name__ == "__main__":
    main()
