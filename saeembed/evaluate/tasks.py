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


def _tweets(task: str, split: str = "test") -> Callable[[pl.DataFrame, int], pl.DataFrame]:
    return lambda df, n: _sample(df.filter((pl.col("task") == task) & (pl.col("split") == split)), n).select(
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


STYLE_DOCS = 400  # documents per style corpus (fewer where the source has fewer)


def _style_tweets(task: str) -> Callable[[pl.DataFrame, int], pl.DataFrame]:
    """TweetEval's validation split: documents no other task of the evaluation reads."""
    return lambda df, n: _tweets(task, "validation")(df, min(n, STYLE_DOCS))


def _reddit_voices(df: pl.DataFrame, n: int) -> pl.DataFrame:
    """M4's Reddit answers written by Llama-2 in the voice its prompt asked for (one voice per text)."""
    return (df.filter((pl.col("domain") == "reddit") & (pl.col("author") == "machine")).sort("pair_id")
            .select("pair_id", "prompt_voice", pl.col("text").str.slice(0, 1200)))


def _m4_authors(df: pl.DataFrame, n: int) -> pl.DataFrame:
    """Both texts of 25 M4 prompts per domain (the human one and Llama-2's), from the end of each domain's
    pairs, so the pairs differ from the diffing corpora's (which take the first pairs)."""
    pairs = (df.select("pair_id", "domain").unique().sort("pair_id")
             .group_by("domain", maintain_order=True).tail(25)["pair_id"])
    return (df.filter(pl.col("pair_id").is_in(pairs.implode())).sort("pair_id", "author")
            .select("pair_id", "domain", "author", pl.col("text").str.slice(0, 1200)))


def _alpaca_lengths(df: pl.DataFrame, n: int) -> pl.DataFrame:
    """Claude 2.1 and Mixtral answers asked to be concise or verbose, 50 per generator (instructions 300..349)."""
    gens = ["claude-2.1_concise", "claude-2.1_verbose", "Mixtral-8x7B-Instruct-v0.1_concise",
            "Mixtral-8x7B-Instruct-v0.1_verbose"]
    return (df.filter(pl.col("generator").is_in(gens) & pl.col("instruction_id").is_between(300, 349))
            .sort("generator", "instruction_id")
            .select("instruction_id", "generator", "style", pl.col("output").str.slice(0, 1200).alias("text")))


# ------------------------------------------------------------------- the length task's corpora --
LENGTH_DOCS = 300  # documents per corpus of the null and planted checks
PLANT_SHARE = 4  # the planted phrase goes into every PLANT_SHARE-th document (a quarter)
LENGTH_PHRASE = " By the way, my grandmother knits purple scarves for penguins."


def _pool(df: pl.DataFrame, seed: int = 0) -> list[str]:
    """Distinct non-empty texts in a seeded random order: the documents the three corpora draw from."""
    texts = df.select(pl.col("text").str.strip_chars()).filter(pl.col("text") != "").unique(maintain_order=True)
    return texts.sample(fraction=1.0, seed=seed, shuffle=True)["text"].to_list()


def _replace_tail(text: str, phrase: str) -> str:
    """``text`` with its last words replaced by ``phrase``: the same number of characters (about the same
    number of tokens), so the phrase does not make the documents that carry it longer."""
    keep = text[: max(len(text) - len(phrase), 0)]
    cut = keep.rfind(" ")
    return (keep[:cut] if cut > 0 else keep).rstrip() + phrase


def _length_corpus(part: str, select: Callable[[pl.DataFrame], pl.DataFrame]
                   ) -> Callable[[pl.DataFrame, int], pl.DataFrame]:
    """``short``: LENGTH_DOCS documents; ``joined``: LENGTH_DOCS documents, each two others of the same kind
    joined by a space (they differ from ``short`` only in length); ``planted``: ``joined`` made of yet other
    documents, with the last words of every PLANT_SHARE-th one replaced by LENGTH_PHRASE (column
    ``planted``); ``appended``: the same documents with the phrase appended instead, so that it also makes
    the documents that carry it longer."""
    def build(df: pl.DataFrame, n: int) -> pl.DataFrame:
        pool = _pool(select(df))
        n = LENGTH_DOCS
        if part == "short":
            return pl.DataFrame({"text": pool[:n]})
        first = n if part == "joined" else 3 * n
        texts = [pool[first + 2 * i] + " " + pool[first + 2 * i + 1] for i in range(n)]
        if part == "joined":
            return pl.DataFrame({"text": texts})
        planted = [i % PLANT_SHARE == 0 for i in range(n)]
        plant = _replace_tail if part == "planted" else (lambda t, phrase: t + phrase)
        return pl.DataFrame({"text": [plant(t, LENGTH_PHRASE) if p else t for t, p in zip(texts, planted)],
                             "planted": planted})
    return build


LENGTH_KINDS = {  # kind → (dataset, the documents of that kind)
    "tweets": ("tweeteval", lambda df: df.filter((pl.col("task") == "sentiment") & (pl.col("split") == "test"))),
    "reddit": ("goemotions", lambda df: df.filter(pl.col("split") == "test")),
    "news": ("ag_news_test", lambda df: df),
}


ALPACA_INSTRUCTIONS = 512  # the first instructions (by id): what 2 shared CPU cores encoded in the time there was


def _alpaca(generator: str) -> Callable[[pl.DataFrame, int], pl.DataFrame]:
    """One AlpacaEval generator's answers to the first ALPACA_INSTRUCTIONS instructions."""
    return lambda df, n: (df.filter((pl.col("generator") == generator)
                                    & (pl.col("instruction_id") < ALPACA_INSTRUCTIONS)).sort("instruction_id")
                          .select("instruction_id", pl.col("output").alias("text")))


ALPACA_GENERATORS = {"alpaca_llama2": "llama-2-70b-chat-hf", "alpaca_gpt35": "gpt-3.5-turbo-1106",
                     "alpaca_7b": "alpaca-7b"}
LENGTH_CORPORA = [EvalCorpus(f"len_{kind}_{part}", dataset, _length_corpus(part, select))
                  for kind, (dataset, select) in LENGTH_KINDS.items()
                  for part in ("short", "joined", "planted", "appended")]
LENGTH_CORPORA += [EvalCorpus(name, "alpacaeval_model_outputs", _alpaca(g)) for name, g in ALPACA_GENERATORS.items()]

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
    # the same two datasets by their titles alone: short texts labelled by topic, on the dev side
    EvalCorpus("ag_titles", "ag_news_test",
               lambda df, n: _sample(df, n, seed=1).select(pl.col("title").alias("text"), "label")),
    EvalCorpus("amazon_titles", "amazon_multidomain_sentiment",
               lambda df, n: _sample(df.filter(pl.col("title").str.strip_chars().str.len_chars() > 0), n, seed=1)
               .select(pl.col("title").alias("text"), "domain")),
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
    # style retrieval: corpora and properties none of the tasks above reads
    EvalCorpus("style_irony", "tweeteval", _style_tweets("irony")),
    EvalCorpus("style_offensive", "tweeteval", _style_tweets("offensive")),
    EvalCorpus("style_sentiment", "tweeteval", _style_tweets("sentiment")),
    EvalCorpus("style_emotion", "tweeteval", _style_tweets("emotion")),
    EvalCorpus("style_voices", "m4_human_vs_llama2", _reddit_voices),
    EvalCorpus("style_authors", "m4_human_vs_llama2", _m4_authors),
    EvalCorpus("style_lengths", "alpacaeval_model_outputs", _alpaca_lengths),
    *LENGTH_CORPORA,
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


# Style properties: how a text is written rather than what it is about. The queries are what a person
# would type; they were written, and the split below fixed, before any method was run on these corpora.
STYLE_TASKS = [
    RetrievalTask("style_irony", "tweets that are sarcastic or mocking", _meta("label") == "irony",
                  "irony (TweetEval validation)"),
    RetrievalTask("style_offensive", "rude or insulting tweets with swear words", _meta("label") == "offensive",
                  "offensive (TweetEval validation)"),
    RetrievalTask("style_sentiment", "neutral tweets that state facts without any opinion",
                  _meta("label") == "neutral", "neutral, no opinion (TweetEval sentiment)"),
    RetrievalTask("style_emotion", "optimistic, hopeful tweets", _meta("label") == "optimism",
                  "optimism (TweetEval emotion)"),
    RetrievalTask("style_emotion", "angry tweets", _meta("label") == "anger", "anger (TweetEval emotion)"),
    RetrievalTask("style_voices", "formal academic writing", _meta("prompt_voice").str.starts_with("formal"),
                  "formal academic voice (M4 Reddit, Llama-2)"),
    RetrievalTask("style_voices", "written in the simple voice of a young child",
                  _meta("prompt_voice").str.starts_with("10 year-old"), "child's voice (M4 Reddit, Llama-2)"),
    RetrievalTask("style_voices", "confident expert answers", _meta("prompt_voice") == "expert confident",
                  "expert confident voice (M4 Reddit, Llama-2)"),
    RetrievalTask("style_authors", "text generated by an AI language model", _meta("author") == "machine",
                  "written by an LLM (M4 human vs Llama-2)"),
    RetrievalTask("style_lengths", "long, detailed answers", _meta("style") == "verbose",
                  "verbose (AlpacaEval concise vs verbose)"),
    RetrievalTask("style_lengths", "short, to-the-point answers", _meta("style") == "concise",
                  "concise (AlpacaEval concise vs verbose)"),
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
