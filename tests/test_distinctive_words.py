"""Distinctive words of groups of documents, on the repo's real GoEmotions comments.

The words name corpus topics, corpus descriptors and document-level labels, so a word every
document carries (a corpus-wide hashtag, as every SemEval stance tweet ends in "#SemST") must name
no group, and must not change what the groups are named.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from saeembed.labels.ctfidf import distinctive_words

SAMPLE = Path(__file__).resolve().parents[1] / "datasets" / "goemotions" / "sample.parquet"


def _comments_by_emotion() -> tuple[list[str], list[np.ndarray], list[str]]:
    docs = pl.read_parquet(SAMPLE).with_columns(pl.col("ekman").list.first().alias("emotion"))
    names = sorted(set(docs["emotion"].to_list()))
    emotion = docs["emotion"].to_numpy()
    return docs["text"].to_list(), [np.flatnonzero(emotion == e) for e in names], names


def test_a_word_every_document_has_names_no_group_and_changes_no_name() -> None:
    texts, groups, _ = _comments_by_emotion()
    plain = distinctive_words(texts, groups, 4)
    tagged = distinctive_words([f"{t} #redditcomment" for t in texts], groups, 4)
    assert not any("redditcomment" in words for words in tagged)
    assert tagged == plain


def test_groups_are_named_by_what_they_share_more_often_than_the_corpus() -> None:
    texts, _, _ = _comments_by_emotion()
    grateful = pl.read_parquet(SAMPLE)["emo_gratitude"].to_numpy()
    words = distinctive_words(texts, [np.flatnonzero(grateful), np.flatnonzero(~grateful)], 3)
    assert "thanks" in words[0].split(", ") or "thank" in words[0].split(", ")
    assert not {"thanks", "thank"} & set(words[1].split(", "))  # the rest has them less often than the corpus
