"""Evaluation harness: SAE embeddings against dense embeddings on labelled real corpora.

    python -m saeembed.evaluate [--store eval.duckdb] [--docs 1000] [--only retrieval,clustering,...]
                                [--out benchmarks/results]

Every number in the README's evaluation section comes from this module. Corpora are read from
``../shared/datasets`` (research-licensed, not shipped) or ``--data DIR``; they are encoded once
into ``--store`` (resumable) and reused by every task. Tables are printed as Markdown and written
to ``--out`` with a JSON twin, so a re-run shows exactly what changed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl

os.environ.setdefault("HF_HUB_OFFLINE", "1")

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets"


# ------------------------------------------------------------------------------- corpora -------
@dataclass
class EvalCorpus:
    """A labelled slice of a shared dataset, written to parquet so ``encode`` reads it like a user file."""

    name: str
    dataset: str
    build: Callable[[pl.DataFrame, int], pl.DataFrame]


def _sample(df: pl.DataFrame, n: int, seed: int = 0) -> pl.DataFrame:
    return df.sample(n=min(n, df.height), seed=seed, shuffle=True) if n else df


def _tweets(task: str) -> Callable[[pl.DataFrame, int], pl.DataFrame]:
    return lambda df, n: _sample(df.filter((pl.col("task") == task) & (pl.col("split") == "test")), n).select(
        "text", "label")


CORPORA: dict[str, EvalCorpus] = {c.name: c for c in [
    EvalCorpus("tweet_hate", "tweeteval", _tweets("hate")),
    EvalCorpus("tweet_offensive", "tweeteval", _tweets("offensive")),
    EvalCorpus("tweet_irony", "tweeteval", _tweets("irony")),
    EvalCorpus("goemotions", "goemotions", lambda df, n: _sample(df, n).drop("labels", "label_ids", "ekman",
                                                                            "sentiment_group", "split")),
    EvalCorpus("ag_news", "ag_news_test", lambda df, n: _sample(df, n).select("text", "label")),
    EvalCorpus("amazon", "amazon_multidomain_sentiment",
               lambda df, n: _sample(df, n).select(pl.col("text").str.slice(0, 600), "domain", "sentiment")),
    EvalCorpus("alpaca_concise", "alpacaeval_model_outputs",
               lambda df, n: df.filter(pl.col("generator") == "gpt4_1106_preview_concise")
               .sort("instruction_id").head(n // 4 or 200).select("instruction_id", pl.col("output").alias("text"))),
    EvalCorpus("alpaca_verbose", "alpacaeval_model_outputs",
               lambda df, n: df.filter(pl.col("generator") == "gpt4_1106_preview_verbose")
               .sort("instruction_id").head(n // 4 or 200).select("instruction_id", pl.col("output").alias("text"))),
    EvalCorpus("m4_human", "m4_human_vs_llama2",
               lambda df, n: df.filter(pl.col("author") == "human").sort("pair_id").head(n // 4 or 200)
               .select("pair_id", "domain", pl.col("text").str.slice(0, 1500))),
    EvalCorpus("m4_llama2", "m4_human_vs_llama2",
               lambda df, n: df.filter(pl.col("author") == "machine").sort("pair_id").head(n // 4 or 200)
               .select("pair_id", "domain", pl.col("text").str.slice(0, 1500))),
]}


# Property queries written from each dataset's label definitions; ``positive`` marks relevant docs.
@dataclass
class RetrievalTask:
    corpus: str
    query: str
    positive: pl.Expr
    name: str


def _meta(field: str) -> pl.Expr:
    return pl.col(field)


RETRIEVAL_TASKS = [
    RetrievalTask("tweet_hate", "hateful tweets attacking immigrants or women", _meta("label") == "hate", "TweetEval hate"),
    RetrievalTask("tweet_offensive", "offensive, insulting or profane tweets", _meta("label") == "offensive",
                  "TweetEval offensive"),
    RetrievalTask("tweet_irony", "ironic or sarcastic tweets", _meta("label") == "irony", "TweetEval irony"),
    RetrievalTask("goemotions", "comments expressing gratitude or thanks", _meta("emo_gratitude"), "GoEmotions gratitude"),
    RetrievalTask("goemotions", "comments expressing anger", _meta("emo_anger"), "GoEmotions anger"),
    RetrievalTask("goemotions", "comments expressing amusement or laughter", _meta("emo_amusement"), "GoEmotions amusement"),
    RetrievalTask("goemotions", "comments expressing love or affection", _meta("emo_love"), "GoEmotions love"),
    RetrievalTask("goemotions", "comments asking curious questions", _meta("emo_curiosity"), "GoEmotions curiosity"),
    RetrievalTask("goemotions", "comments expressing sadness", _meta("emo_sadness"), "GoEmotions sadness"),
    RetrievalTask("ag_news", "news about sports", _meta("label") == "Sports", "AG News sports"),
    RetrievalTask("ag_news", "business and economy news", _meta("label") == "Business", "AG News business"),
    RetrievalTask("ag_news", "world politics news", _meta("label") == "World", "AG News world"),
    RetrievalTask("ag_news", "science and technology news", _meta("label") == "Sci/Tech", "AG News sci/tech"),
    RetrievalTask("amazon", "negative reviews complaining about a product", _meta("sentiment") == "negative",
                  "Amazon negative"),
    RetrievalTask("amazon", "reviews of kitchen appliances", _meta("domain") == "kitchen", "Amazon kitchen"),
]


def average_precision(relevant: np.ndarray) -> float:
    """AP of a ranking given as a boolean array in rank order (all documents ranked)."""
    hits = np.cumsum(relevant)
    if hits[-1] == 0:
        return float("nan")
    precision_at_hit = hits[relevant] / (np.flatnonzero(relevant) + 1)
    return float(precision_at_hit.mean())


def precision_at(relevant: np.ndarray, k: int) -> float:
    return float(relevant[:k].mean())


def markdown(df: pl.DataFrame, digits: int = 3) -> str:
    cols = df.columns
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.iter_rows():
        cells = [f"{v:.{digits}f}" if isinstance(v, float) else ("" if v is None else str(v)) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)



# ------------------------------------------------------------------------------- encoding ------
class Harness:
    """Encodes the corpora a task needs (once, resumable) and runs the analyses on them."""

    def __init__(self, store: Path, data: Path, docs: int, sae: str = "default") -> None:
        from .api import open_store

        self.store_path, self.data, self.docs, self.sae = store, data, docs, sae
        self.work = store.parent / (store.stem + ".corpora")
        self.work.mkdir(parents=True, exist_ok=True)
        self._reader = None
        self.store = open_store(store)
        self.encode_s: dict[str, float] = {}

    def reader(self):  # noqa: ANN201 - one loaded reader shared by every corpus
        if self._reader is None:
            from .reader import Reader
            from .sae import open_sae

            cfg = open_sae(self.sae).sae.cfg
            self._reader = Reader(cfg.model_name, layer=cfg.hook_layer)
        return self._reader

    def frame(self, name: str) -> pl.DataFrame:
        """The corpus as written for encoding; its row order is the documents' row_idx."""
        return pl.read_parquet(self.corpus_path(name))

    def corpus_path(self, name: str, frame: pl.DataFrame | None = None) -> Path:
        path = self.work / f"{name}.parquet"
        if not path.exists():
            if frame is None:
                spec = CORPORA[name]
                src = self.data / spec.dataset / "data.parquet"
                if not src.exists():
                    raise SystemExit(f"error: dataset {src} not found; pass --data DIR (the shared datasets folder)")
                frame = spec.build(pl.read_parquet(src), self.docs)
            frame.write_parquet(path)
        return path

    def ensure(self, name: str, frame: pl.DataFrame | None = None) -> str:
        from .encode import encode_corpus

        known = set(self.store.corpora()["name"].to_list()) if self.store_path.exists() else set()
        if name not in known:
            self.store.close()
            t0 = time.perf_counter()
            encode_corpus(self.store_path, self.corpus_path(name, frame), name, text_col="text", sae=self.sae,
                          loaded_reader=self.reader(), progress=True)
            self.encode_s[name] = time.perf_counter() - t0
        return name

    def doc_ids(self, name: str) -> np.ndarray:
        """doc_id of every row of the corpus frame (rows dropped as empty get −1)."""
        docs = self.store.documents(name).select("doc_id", "row_idx")
        n = self.frame(name).height
        out = np.full(n, -1, dtype=np.int64)
        out[docs["row_idx"].to_numpy()] = docs["doc_id"].to_numpy()
        return out


# ------------------------------------------------------------------------------- retrieval -----
RANDOM_DRAWS = 50


def full_ranking(ranked: list[int], all_ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The returned ranking, then every document it did not return in random order (ties at the bottom)."""
    seen = set(ranked)
    rest = np.array([d for d in all_ids if d not in seen], dtype=np.int64)
    return np.concatenate([np.asarray(ranked, dtype=np.int64), rng.permutation(rest)])


def eval_retrieval(h: Harness, tasks: list[RetrievalTask]) -> pl.DataFrame:
    from .analysis import search

    rows = []
    for task in tasks:
        h.ensure(task.corpus)
        frame = h.frame(task.corpus)
        ids = h.doc_ids(task.corpus)
        truth = frame.select(task.positive.cast(pl.Boolean).fill_null(False)).to_series().to_numpy()
        valid = ids >= 0
        relevant = dict(zip(ids[valid].tolist(), truth[valid].tolist()))
        all_ids = ids[valid]
        row: dict[str, Any] = {"task": task.name, "query": task.query, "docs": int(valid.sum()),
                               "positives": int(truth[valid].sum())}
        for mode in ("sae", "dense", "hybrid"):
            t0 = time.perf_counter()
            res = search(h.store, task.corpus, task.query, k=len(all_ids), mode=mode)
            row[f"{mode}_s"] = time.perf_counter() - t0
            order = full_ranking(res["doc_id"].to_list(), all_ids, np.random.default_rng(0))
            rel = np.array([relevant[int(d)] for d in order])
            row[f"{mode}_map"], row[f"{mode}_p50"] = average_precision(rel), precision_at(rel, 50)
        rng = np.random.default_rng(0)
        draws = [np.array([relevant[int(d)] for d in rng.permutation(all_ids)]) for _ in range(RANDOM_DRAWS)]
        row["random_map"] = float(np.mean([average_precision(r) for r in draws]))
        row["random_p50"] = float(np.mean([precision_at(r, 50) for r in draws]))
        rows.append(row)
        log(f"retrieval {task.name}: " + "  ".join(f"{m} MAP {row[f'{m}_map']:.3f}" for m in
                                                   ("sae", "dense", "hybrid", "random")))
    return pl.DataFrame(rows)


def retrieval_table(df: pl.DataFrame) -> pl.DataFrame:
    body = df.select("task", "positives", "docs", *[f"{m}_{x}" for x in ("map", "p50")
                                                      for m in ("sae", "dense", "hybrid", "random")])
    mean = body.select(pl.lit("**mean**").alias("task"), pl.lit(None, pl.Int64).alias("positives"),
                       pl.lit(None, pl.Int64).alias("docs"),
                       *[pl.col(c).mean() for c in body.columns[3:]])
    out = pl.concat([body, mean.cast(body.schema)])
    return out.rename({c: c.replace("_map", " MAP").replace("_p50", " P@50") for c in out.columns})


# ------------------------------------------------------------------------------- clustering ----
CLUSTER_QUERIES = {"sentiment": "sentiment", "product category": "product category"}


def eval_clustering(h: Harness) -> pl.DataFrame:
    from sklearn.cluster import HDBSCAN, KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from .analysis import cluster
    from .analysis.cluster import cluster_assignments
    from .embed import get_embedder

    name = h.ensure("amazon")
    frame = h.frame(name)
    ids = h.doc_ids(name)
    by_id = {int(d): i for i, d in enumerate(ids) if d >= 0}
    labels = {"sentiment": frame["sentiment"].to_numpy(), "domain": frame["domain"].to_numpy()}
    rows: list[dict[str, Any]] = []

    def score(method: str, k: int | None, assign: dict[int, int]) -> None:
        idx = np.array(list(by_id.values()))
        pred = np.array([assign.get(d, -1) for d in by_id])  # unplaced docs form one extra group
        row: dict[str, Any] = {"method": method, "k": k if k is not None else len(set(pred) - {-1})}
        for axis, y in labels.items():
            row[f"NMI {axis}"] = normalized_mutual_info_score(y[idx], pred)
            row[f"ARI {axis}"] = adjusted_rand_score(y[idx], pred)
        rows.append(row)
        log(f"clustering {method} k={row['k']}: " + "  ".join(f"{c} {row[c]:.3f}" for c in row if c.startswith("NMI")))

    for k in (2, 4):
        for q in CLUSTER_QUERIES:
            d = cluster_assignments(cluster(h.store, name, query=q, k=k))
            score(f'SAE targeted, query "{q}"', k, dict(zip(d["doc_id"].to_list(), d["cluster"].to_list())))
        d = cluster_assignments(cluster(h.store, name, unfiltered=True, k=k))
        score("SAE unfiltered (all latents)", k, dict(zip(d["doc_id"].to_list(), d["cluster"].to_list())))
        emb = get_embedder().embed(frame["text"].to_list())
        km = KMeans(n_clusters=k, n_init=10, random_state=0).fit_predict(emb)
        score("dense MiniLM + k-means", k, {int(ids[i]): int(c) for i, c in enumerate(km) if ids[i] >= 0})
    hd = HDBSCAN(min_cluster_size=20).fit_predict(emb)
    score("dense MiniLM + HDBSCAN", None, {int(ids[i]): int(c) for i, c in enumerate(hd) if ids[i] >= 0})
    return pl.DataFrame(rows)


# ------------------------------------------------------------------------------- diffing -------
DIFF_PAIRS = [("alpaca_verbose", "alpaca_concise", "AlpacaEval GPT-4-turbo verbose vs concise"),
              ("m4_llama2", "m4_human", "M4 Llama-2 vs human")]
REPLICATION_TOP = 50


def _half_counts(h: Harness, name: str, half: int) -> tuple[np.ndarray, int]:
    """Per-latent document counts (max-pool > 0) over the rows of one half (row_idx parity)."""
    from .analysis.common import corpus_info

    info = corpus_info(h.store, name)
    df = h.store.sql("SELECT feature_id, count(*) AS n FROM activations WHERE doc_id BETWEEN $lo AND $hi "
                     "AND (doc_id & 1) = $half AND value > 0 GROUP BY feature_id",
                     {"lo": info["lo"], "hi": info["hi"], "half": half})
    counts = np.zeros(int(info["d_sae"]), np.int64)
    counts[df["feature_id"].to_numpy()] = df["n"].to_numpy()
    n = h.store.sql("SELECT count(*) AS n FROM documents WHERE corpus_id = $c AND (row_idx & 1) = $half",
                    {"c": info["corpus_id"], "half": half})["n"][0]
    return counts, int(n)


def _significant_diffs(ka: np.ndarray, na: int, kb: np.ndarray, nb: int, fdr: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(signed frequency difference, BH-significant mask) of A vs B for every latent, with diff's own test."""
    from .analysis.common import bh_qvalues
    from .analysis.diff import two_proportion_test

    _, p = two_proportion_test(ka, na, kb, nb)
    tested = (ka + kb) > 0
    q = np.ones(len(ka))
    q[tested] = bh_qvalues(p[tested])
    return ka / na - kb / nb, q <= fdr


def eval_diffing(h: Harness) -> tuple[pl.DataFrame, dict[str, pl.DataFrame]]:
    from .analysis import diff

    summary, tops = [], {}
    for a, b, title in DIFF_PAIRS:
        h.ensure(a)
        h.ensure(b)
        res = diff(h.store, [a, b], min_diff=0.0, top=None, examples=0)
        tops[title] = (res.filter(pl.col("diff").abs() > 0).sort("diff", descending=True)
                       .select("target", "feature_id", "label", "freq_target", "freq_other", "diff", "q_value")
                       .head(20))
        halves = [(_half_counts(h, a, s), _half_counts(h, b, s)) for s in (0, 1)]
        (ka0, na0), (kb0, nb0) = halves[0]
        (ka1, na1), (kb1, nb1) = halves[1]
        d0, sig0 = _significant_diffs(ka0, na0, kb0, nb0)
        d1, sig1 = _significant_diffs(ka1, na1, kb1, nb1)
        cand = np.flatnonzero(sig0)
        top = cand[np.argsort(-np.abs(d0[cand]))][:REPLICATION_TOP]
        replicated = (np.sign(d1[top]) == np.sign(d0[top])) & sig1[top]
        n_sig = int(sig0.sum())
        summary.append({"comparison": title, "docs per side": (na0 + na1, nb0 + nb1).__str__(),
                        "significant latents (half 1)": n_sig, "top-N tested": len(top),
                        "replicated in half 2": float(replicated.mean()) if len(top) else float("nan"),
                        "significant (full)": int((res["q_value"] <= 0.05).sum())})
        log(f"diffing {title}: {len(top)} top latents, replication {summary[-1]['replicated in half 2']:.2f}")
    return pl.DataFrame(summary), tops


# ------------------------------------------------------------------------------- correlations --
PLANT_PHRASE = " By the way, my grandmother knits purple scarves for penguins."
PLANT_SHARE = 0.02


def eval_correlation(h: Harness) -> pl.DataFrame:
    """Plant a phrase in 2 % of the documents that have latent X; where does correlate rank (X, phrase)?"""
    from .analysis import correlate

    base = h.ensure("goemotions")
    frame = h.frame(base)
    emb, ids = h.store.embeddings(base)
    binm = (emb > 0).tocsc()
    n = binm.shape[0]
    freq = np.asarray(binm.sum(axis=0)).ravel() / n
    rng = np.random.default_rng(0)
    n_plant = max(5, int(round(PLANT_SHARE * n)))
    # concept X: a latent in 10–30 % of documents, so 2 % of the corpus fits inside it
    xs = np.flatnonzero((freq > 0.10) & (freq < 0.30))
    x = int(rng.choice(xs))
    with_x = ids[binm[:, x].nonzero()[0]]
    chosen = set(rng.choice(with_x, n_plant, replace=False).tolist())
    rows_chosen = sorted(int(d) & 0xFFFFFFFF for d in chosen)
    planted = frame.with_row_index("_r").with_columns(
        pl.when(pl.col("_r").is_in(rows_chosen)).then(pl.col("text") + PLANT_PHRASE).otherwise(pl.col("text"))
        .alias("text")).drop("_r")
    name = h.ensure("goemotions_planted", planted)
    emb2, ids2 = h.store.embeddings(name)
    bin2 = (emb2 > 0).tocsc()
    is_planted = np.isin(ids2 & 0xFFFFFFFF, rows_chosen)
    # the phrase latent Y: present in most planted documents, rarest elsewhere
    in_p = np.asarray(bin2[is_planted].sum(axis=0)).ravel() / is_planted.sum()
    out_p = np.asarray(bin2[~is_planted].sum(axis=0)).ravel() / max((~is_planted).sum(), 1)
    cand = np.flatnonzero(in_p >= 0.8)
    y = int(cand[np.argmin(out_p[cand])])
    t0 = time.perf_counter()
    # default support filters (5 documents, 3 together), every latent a candidate (the default keeps
    # the 2,000 most frequent; Y is rare by design), no NPMI cut and no label filter: a full ranking
    pairs = correlate(h.store, name, top_features=int(emb2.shape[1]), min_npmi=-1.0, label_filter=False, top=None)
    elapsed = time.perf_counter() - t0
    hit = pairs.with_row_index("rank", offset=1).filter(
        ((pl.col("feature_a") == x) & (pl.col("feature_b") == y)) | ((pl.col("feature_a") == y) & (pl.col("feature_b") == x)))
    y_pairs = pairs.filter((pl.col("feature_a") == y) | (pl.col("feature_b") == y)).with_row_index("r", offset=1)
    rank_y = y_pairs.filter((pl.col("feature_a") == x) | (pl.col("feature_b") == x))
    labels = h.store.features().filter(pl.col("feature_id").is_in([x, y]))
    lab = dict(zip(labels["feature_id"].to_list(), labels["label"].to_list()))
    row = {"docs": n, "planted docs": n_plant, "X": f"{x} ({lab.get(x, '')})", "freq X": float(freq[x]),
           "phrase latent Y": f"{y} ({lab.get(y, '')})", "freq Y outside planted": float(out_p[y]),
           "NPMI(X,Y)": float(hit["npmi"][0]) if hit.height else float("nan"),
           "rank among all pairs": int(hit["rank"][0]) if hit.height else None,
           "pairs scored": pairs.height,
           "rank among Y's pairs": int(rank_y["r"][0]) if rank_y.height else None,
           "correlate s": elapsed}
    log(f"correlation: planted pair rank {row['rank among all pairs']} of {pairs.height}")
    return pl.DataFrame([row])


# ------------------------------------------------------------------------------- speed ---------
def eval_speed(h: Harness, docs: int = 200) -> pl.DataFrame:
    """Encode tokens/s of the pipeline vs the bare truncated forward (the benchmark's own functions)."""
    import tempfile

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from encode_throughput import bare_forward, pipeline  # type: ignore[import-not-found]

    reader = h.reader()
    with tempfile.TemporaryDirectory() as tmp:
        sample = Path(tmp) / "sample.parquet"
        h.frame(h.ensure("amazon")).head(docs).select("text").write_parquet(sample)
        bare_forward(reader, sample, "text", 256, 4096)
        bare = max((bare_forward(reader, sample, "text", 256, 4096) for _ in range(2)), key=lambda r: r[0] / r[1])
        pipe = max((pipeline(reader, sample, "text", h.sae, 256, 4096) for _ in range(2)), key=lambda r: r[0] / r[1])
    bare_tps = bare[0] / bare[1]
    pipe_tps = pipe[0] / pipe[1] * bare[0] / max(pipe[0], 1)  # same forwarded-token count for both
    return pl.DataFrame([{"device": str(reader.device), "dtype": str(reader.dtype).replace("torch.", ""),
                          "threads": torch.get_num_threads(), "docs": docs, "bare forward tok/s": bare_tps,
                          "pipeline tok/s": pipe_tps, "ratio": pipe_tps / bare_tps}])


# ------------------------------------------------------------------------------- main ----------
TASKS = ("retrieval", "clustering", "diffing", "correlation", "speed")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m saeembed.evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, default=Path("eval/eval.duckdb"))
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of the shared datasets")
    ap.add_argument("--docs", type=int, default=1000, help="documents per labelled corpus")
    ap.add_argument("--sae", default="default")
    ap.add_argument("--only", default=",".join(TASKS), help=f"comma list of {', '.join(TASKS)}")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args(argv)
    only = [t.strip() for t in args.only.split(",") if t.strip()]
    unknown = set(only) - set(TASKS)
    if unknown:
        ap.error(f"unknown task(s) {', '.join(sorted(unknown))}; choose from {', '.join(TASKS)}")
    args.store.parent.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    h = Harness(args.store, args.data, args.docs, args.sae)
    sections: list[str] = []
    results: dict[str, Any] = {"docs": args.docs, "sae": args.sae}
    t_start = time.perf_counter()
    if "retrieval" in only:
        df = eval_retrieval(h, RETRIEVAL_TASKS)
        results["retrieval"] = df.to_dicts()
        sections.append("### Property retrieval (MAP, precision@50)\n\n" + markdown(retrieval_table(df)))
    if "clustering" in only:
        df = eval_clustering(h)
        results["clustering"] = df.to_dicts()
        sections.append("### Targeted clustering, Amazon reviews (domain × sentiment)\n\n" + markdown(df))
    if "diffing" in only:
        summary, tops = eval_diffing(h)
        results["diffing"] = {"summary": summary.to_dicts(), "top": {k: v.to_dicts() for k, v in tops.items()}}
        text = "### Dataset diffing: replication of the top-50 differences across halves\n\n" + markdown(summary)
        for title, top in tops.items():
            text += (f"\n\n**{title}**: the ten largest frequency differences (target = the corpus where the "
                     "latent is more frequent)\n\n" + markdown(top.head(10)))
        sections.append(text)
    if "correlation" in only:
        df = eval_correlation(h)
        results["correlation"] = df.to_dicts()
        sections.append("### Correlations: rank of a planted pair\n\n" + markdown(df))
    if "speed" in only:
        df = eval_speed(h)
        results["speed"] = df.to_dicts()
        sections.append("### Encode speed\n\n" + markdown(df, digits=2))
    results["encode_s"] = h.encode_s
    results["wall_s"] = time.perf_counter() - t_start
    report = "\n\n".join(sections) + "\n"
    (args.out / "evaluation.md").write_text(report)
    (args.out / "evaluation.json").write_text(json.dumps(results, indent=2, default=str))
    print(report)


if __name__ == "__main__":
    main()
