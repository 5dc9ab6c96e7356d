"""The evaluation's corpora and retrieval tasks, and the fixed development / held-out split."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import polars as pl

DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "datasets"


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


def _stance(df: pl.DataFrame, n: int) -> pl.DataFrame:
    return _sample(df.filter(pl.col("task") == "stance"), n // 2).select(
        "text", pl.col("stance_target").alias("target"), pl.col("label").alias("stance"))


def _m4_pairs(df: pl.DataFrame, n: int) -> pl.DataFrame:
    """Both texts of ``n // 4`` randomly drawn M4 prompts (human and Llama-2 answer of each), so the authors are
    balanced within every domain and the pair shares its topic."""
    pairs = _sample(df.select("pair_id").unique().sort("pair_id"), n // 4)
    return (df.join(pairs, on="pair_id").sort("pair_id", "author")
            .select("pair_id", "domain", "author", pl.col("text").str.slice(0, 1500)))


CORPORA: dict[str, EvalCorpus] = {c.name: c for c in [
    EvalCorpus("tweet_hate", "tweeteval", _tweets("hate")),
    EvalCorpus("tweet_offensive", "tweeteval", _tweets("offensive")),
    EvalCorpus("tweet_irony", "tweeteval", _tweets("irony")),
    EvalCorpus("tweet_stance", "tweeteval", _stance),
    EvalCorpus("tweet_emotion", "tweeteval", lambda df, n: _tweets("emotion")(df, n // 2)),
    EvalCorpus("tweet_sentiment", "tweeteval", lambda df, n: _tweets("sentiment")(df, n // 2)),
    EvalCorpus("m4_mixed", "m4_human_vs_llama2", _m4_pairs),
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
    RetrievalTask("tweet_hate", "hateful tweets attacking immigrants or women", _meta("label") == "hate",
                  "TweetEval hate"),
    RetrievalTask("tweet_offensive", "offensive, insulting or profane tweets", _meta("label") == "offensive",
                  "TweetEval offensive"),
    RetrievalTask("tweet_irony", "ironic or sarcastic tweets", _meta("label") == "irony", "TweetEval irony"),
    RetrievalTask("goemotions", "comments expressing gratitude or thanks", _meta("emo_gratitude"),
                  "GoEmotions gratitude"),
    RetrievalTask("goemotions", "comments expressing anger", _meta("emo_anger"), "GoEmotions anger"),
    RetrievalTask("goemotions", "comments expressing amusement or laughter", _meta("emo_amusement"),
                  "GoEmotions amusement"),
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


# ------------------------------------------------------------------------------- the split -----
def _digest(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()


def task_halves(tasks: list[RetrievalTask] | None = None) -> dict[str, str]:
    """Task name → ``"dev"`` or ``"held-out"``: a split fixed before any tuning.

    Rule: within each source dataset, order its tasks by the SHA-1 of the task name and alternate
    dev, held-out, dev, … — deterministic, independent of results, and balanced across datasets
    (a dataset with an odd number of tasks gives dev the extra one). Every method and setting is
    chosen on the dev half only; the held-out half is reported as measured.
    """
    tasks = RETRIEVAL_TASKS if tasks is None else tasks
    by_dataset: dict[str, list[str]] = {}
    for t in tasks:
        by_dataset.setdefault(CORPORA[t.corpus].dataset, []).append(t.name)
    out: dict[str, str] = {}
    for names in by_dataset.values():
        for i, name in enumerate(sorted(names, key=_digest)):
            out[name] = "dev" if i % 2 == 0 else "held-out"
    return out
