"""Score a store's labels on one of its corpora (``saeembed labels score CORPUS``).

Every label row of the corpus' SAE — shipped, imported, descriptor, LLM — gets its detection AUC
(:mod:`.score`) on windows of this corpus, so all sources are judged on the same windows and the
best one is what analyses show. Every latent that fires in the sample gets its strongest window in this
corpus as its ``context`` row (replacing a shipped one, drawn from the SAE's training mix), shown where no
label reaches the floor: the scores and the context then describe the same corpus.

Token-level SAEs: up to ``max_docs`` documents (a seeded sample) are read again with the corpus'
reader and SAE, and every token's window (up to ``max_tokens``) is embedded once. Document-level
SAEs: the stored codes are the contexts, each document's text its window.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from ..errors import UserError
from ..labelrule import naming_labels
from ..store import CONTEXT_LABEL_SOURCE
from ..store.handle import as_store
from .budget import SCORE_DOCS, SCORE_TOKENS
from .catalog import labels_of, write_labels
from .contexts import Contexts, document_codes, draw_contexts, encode_tokens
from .score import FLOOR, detection_scores, embed_windows

if TYPE_CHECKING:
    from ..store.corpusinfo import CorpusInfo
    from ..store.handle import Store


def corpus_contexts(store: Store, info: CorpusInfo, max_docs: int = SCORE_DOCS, max_tokens: int = SCORE_TOKENS,
                    seed: int = 0) -> Contexts:
    """The contexts of the corpus' latents (see the module docstring)."""
    from ..reader import is_doc_reader

    docs = store.sql("SELECT doc_id, text FROM documents WHERE corpus_id = ? ORDER BY hash(doc_id + ?), doc_id "
                     "LIMIT ?", [info.corpus_id, int(seed), int(max_docs)])
    if docs.height == 0:
        raise UserError(f"corpus {info['name']!r} has no documents to score labels on")
    texts = [str(t or "") for t in docs["text"].to_list()]
    if is_doc_reader(info.reader):
        mat, ids = store.embeddings(info.name)
        rows = np.searchsorted(ids, docs["doc_id"].to_numpy())
        return draw_contexts(document_codes(mat[rows]), lambda _: "", max_bank=max_tokens, seed=seed, texts=texts)
    from ..models import corpus_models
    from ..train import read_hidden_states

    path = store.con.execute("SELECT path FROM saes WHERE sae = ?", [info.sae]).fetchall()
    reader, sae = corpus_models(info.reader, info.layer, info.config, path[0][0] if path else None)

    def chunks() -> Any:
        read = 0
        for chunk in read_hidden_states(reader, texts, chunk_docs=32):
            yield chunk
            read += len(chunk["tok"])
            if read >= max_tokens:
                return

    codes = encode_tokens(sae, chunks())
    return draw_contexts(codes, reader.tokenizer.decode, max_bank=max_tokens, seed=seed)


def score_store_labels(store: Store | str | Path, corpus: str, sources: list[str] | None = None,
                       max_docs: int = SCORE_DOCS, max_tokens: int = SCORE_TOKENS) -> pl.DataFrame:
    """Score the labels (every source, or ``sources``) of ``corpus``'s SAE on that corpus and store the
    scores; returns one row per source: labels, scored, share at or above the floor, median score."""
    from ..store.corpusinfo import corpus_info

    st = as_store(store)
    info = corpus_info(st, corpus)
    rows = naming_labels(labels_of(st, info.sae))
    if sources:
        missing = sorted(set(sources) - set(rows["label_source"].unique().to_list()))
        if missing:
            raise UserError(f"SAE {info['sae']} has no labels from source {missing[0]!r}; see saeembed labels list")
        rows = rows.filter(pl.col("label_source").is_in(sources))
    if rows.height == 0:
        raise UserError(f"SAE {info['sae']} has no labels to score; import or generate labels first")
    ctx = corpus_contexts(st, info, max_docs, max_tokens)
    scores = detection_scores(ctx, embed_windows(ctx), rows, half="all")
    scored = rows.with_columns(pl.Series("score", scores, pl.Float64).fill_nan(None))
    measured = scored.filter(pl.col("score").is_not_null())
    contexts = [(j, ctx.shown_context(j)) for j in sorted(ctx.explain)]
    context_rows = pl.DataFrame({"feature_id": [j for j, c in contexts if c], "label": [c for _, c in contexts if c],
                                 "label_source": CONTEXT_LABEL_SOURCE,
                                 "description": f"strongest context in corpus {corpus!r}"})
    write_labels(st, info.sae, pl.concat([measured.select("feature_id", "label", "label_source", "score",
                                                             "density", "description"), context_rows],
                                            how="diagonal_relaxed"))
    return (scored.group_by("label_source").agg(
        pl.len().alias("labels"), pl.col("score").is_not_null().sum().alias("scored"),
        (pl.col("score") >= FLOOR).mean().alias("at_or_above_floor"), pl.col("score").median().alias("median_score"))
        .sort("label_source").with_columns(pl.lit(info.sae).alias("sae")))


__all__ = ["corpus_contexts", "score_store_labels", "SCORE_DOCS", "SCORE_TOKENS"]
