"""What the browser's pages show, read from the store: a latent's statistics, neighbours and top
documents, a document's strongest latents. Each function takes a read-only store and returns
polars frames or sections; the HTTP layer (:mod:`saeembed.browse.app`) only formats them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from ..analysis.common import feature_labels, top_documents
from ..analysis.correlate import PEAK_SAMPLE
from ..analysis.pair_length import LengthCells
from ..errors import UserError
from ..highlight.views import Highlighter
from ..labels import labels_of, resolve_sae_id
from ..report.charts import density_chart, histogram_chart
from ..report.page import ChartView, Example, ExampleGroup, Links, Section
from ..report.tables import frame_table
from ..store.corpusinfo import corpus_info
from ..store.parquet import unreadable_corpora
from ..store.queries import run_query
from ..store.strata import corpus_lengths

if TYPE_CHECKING:
    from ..store.handle import Store

HIST_BINS = 30
TOP_DOCS = 5  # per corpus on a latent page
NEIGHBOURS = 15
MIN_COOCCUR = 3


class NotFoundError(UserError):
    """An id or name that is not in the store (the app answers 404)."""


def sae_info(store: Store, sae: str | None) -> dict[str, Any]:
    """The SAE meant by ``sae`` (a prefix is enough); by default the SAE of the first corpus."""
    saes = store.sql("SELECT sae FROM saes ORDER BY sae")["sae"].to_list()
    if not saes:
        raise NotFoundError("the store has no SAE yet; encode a corpus first")
    if sae is None:
        first = store.sql("SELECT sae FROM corpora ORDER BY corpus_id LIMIT 1")["sae"].to_list()
        sae = first[0] if first else saes[0]
    try:
        return resolve_sae_id(store, sae)
    except UserError as exc:
        raise NotFoundError(str(exc)) from None


def check_latent(info: dict[str, Any], feature_id: int) -> None:
    if not 0 <= feature_id < int(info["d_sae"]):
        raise NotFoundError(f"no latent {feature_id} in SAE {info['sae']} (latents 0..{int(info['d_sae']) - 1})")


def latent_stats(store: Store, sae: str, feature_id: int) -> pl.DataFrame:
    """Per corpus of the SAE: corpus, of (documents), documents (where it fires), share, max/mean/p90."""
    df = run_query(store, "latent_corpus_stats", {"sae": sae, "feature": int(feature_id), "threshold": 0.0})
    return df.with_columns((pl.col("documents") / pl.col("of").clip(lower_bound=1)).alias("share"))


def latent_histogram(store: Store, sae: str, feature_id: int, bins: int = HIST_BINS) -> pl.DataFrame:
    return run_query(store, "latent_histogram", {"sae": sae, "feature": int(feature_id), "bins": int(bins)})


def neighbours(store: Store, corpus: str, feature_id: int, n: int = NEIGHBOURS) -> pl.DataFrame:
    """Latents co-occurring with ``feature_id`` in ``corpus``, by NPMI at equal document length, as
    ``saeembed correlate`` ranks them by default (feature_id, label, npmi, n_ab, n_b, same_peak_share);
    the expectation comes from the length strata kept at ingest, so the page reads no document. Latents
    that peak on the same token are kept here, with their share: on a latent's page a near-duplicate
    is worth seeing, where correlate, looking for two things that co-occur, drops it."""
    info = corpus_info(store, corpus)
    df = run_query(store, "latent_cooccurrence", {"lo": info.lo, "hi": info.hi, "feature": int(feature_id),
                                                  "threshold": 0.0, "min_cooccur": MIN_COOCCUR})
    lengths = corpus_lengths(store, info)
    first = int(lengths.strata.min(initial=0))
    n_strata = int(lengths.strata.max(initial=0)) - first + 1
    width = max(int(info.d_sae or 0), int(lengths.latents["feature_id"].max(initial=-1)) + 1, int(feature_id) + 1)
    docs, mean_log = lengths.on(first, n_strata)
    held = docs > 0
    latents = np.concatenate([[int(feature_id)], df["feature_id"].to_numpy().astype(np.int64)])
    cells = LengthCells.from_counts(docs[held], lengths.present(width, first, n_strata)[held][:, latents],
                                    mean_log[held])  # column 0: this latent
    scores = cells.npmi(np.zeros(df.height, np.int64), np.arange(1, df.height + 1), df["n_ab"].to_numpy())
    df = df.with_columns(pl.Series("npmi", scores, pl.Float64)).sort(["npmi", "n_ab"], descending=True).head(n)
    labels = feature_labels(store, info.sae, df["feature_id"].to_list())
    peaks = run_query(store, "pair_peaks", {"lo": info.lo, "hi": info.hi, "threshold": 0.0,
                                            "fa": [int(feature_id)] * df.height, "fb": df["feature_id"].to_list(),
                                            "n": PEAK_SAMPLE})
    peaks = peaks.select(pl.col("feature_b").cast(df.schema["feature_id"]).alias("feature_id"), "same_peak_share")
    return (df.join(labels, on="feature_id", how="left", maintain_order="left")
            .join(peaks, on="feature_id", how="left", maintain_order="left")
            .select("feature_id", "label", "npmi", "n_ab", "n_b", "same_peak_share"))


def latent_sections(store: Store, info: dict[str, Any], feature_id: int, corpus: str | None,
                    links: Links) -> tuple[list[Section], pl.DataFrame, str | None]:
    """([where it fires, in numbers], labels, corpus used for neighbours) of one latent's page."""
    check_latent(info, feature_id)
    sae = info["sae"]
    labels = labels_of(store, sae, [feature_id]).select("label", "label_source", "score", "density", "description")
    stats = latent_stats(store, sae, feature_id)
    if corpus is not None and corpus not in stats["corpus"].to_list():
        raise NotFoundError(f"no corpus {corpus!r} encoded with SAE {sae}; pick one of {', '.join(stats['corpus'])}")
    fires = stats.filter(pl.col("documents") > 0)
    # a Parquet-kept corpus whose files are damaged keeps its statistics here but shows no documents,
    # so one damaged corpus never breaks every latent's page
    readable = fires.filter(~pl.col("corpus").is_in(_unreadable_names(store)))
    corpus = corpus or (readable.sort("documents", descending=True)["corpus"][0] if readable.height else None)
    charts = []
    if fires.height:
        charts.append(ChartView("Density per corpus", "share of documents where the latent fires",
                                density_chart(stats.select("corpus", "share", "documents", "of"))))
        charts.append(ChartView("Activation histogram", "max-pooled activation over the documents where it fires",
                                histogram_chart(latent_histogram(store, sae, feature_id))))
    tables = [("Corpora", frame_table(stats.select("corpus", "of", "documents", "share", "max_value", "mean_value",
                                                   "p90")))]
    if corpus is not None:
        near = neighbours(store, corpus, feature_id)
        tables.append((f"Correlated latents in {corpus} (NPMI at equal document length)",
                       frame_table(near, links={"feature_id": lambda r: links.latent(r["feature_id"]),
                                                "label": lambda r: links.latent(r["feature_id"])})))
    groups = _top_documents(store, readable["corpus"].to_list(), feature_id, links)
    lines = [f"SAE {sae}; fires in {int(fires['documents'].sum()) if fires.height else 0} documents of "
             f"{int(stats['of'].sum())} in {stats.height} corpora."]
    return [Section("Where it fires", lines, charts, [], groups, ["shade: activation of this latent"]),
            Section("Per corpus and neighbours", [], [], tables)], labels, corpus


def _unreadable_names(store: Store) -> list[str]:
    left_out = unreadable_corpora(store.con)
    if not left_out:
        return []
    return store.sql("SELECT name FROM corpora WHERE list_contains($ids, corpus_id)", {"ids": list(left_out)})[
        "name"].to_list()


def _top_documents(store: Store, corpora: list[str], feature_id: int, links: Links) -> list[ExampleGroup]:
    tops = {c: top_documents(store, corpus_info(store, c), [feature_id], TOP_DOCS).get(feature_id, []) for c in corpora}
    hl = Highlighter(store, [d for ds in tops.values() for d in ds], [feature_id])
    return [ExampleGroup(f"Top documents in {c}", [Example(f"doc {d}", hl.view(d, [feature_id]),
                                                           links.doc(d, feature_id)) for d in ds])
            for c, ds in tops.items() if ds]


def document(store: Store, doc_id: int) -> dict[str, Any]:
    """The document row with its corpus name; NotFoundError for an unknown id."""
    df = store.sql("SELECT d.doc_id, d.row_idx, d.text, d.n_tokens, d.meta, c.name AS corpus, c.sae FROM documents d "
                   "JOIN corpora c USING (corpus_id) WHERE d.doc_id = ?", [int(doc_id)])
    if df.height == 0:
        raise NotFoundError(f"no document {doc_id} in this store")
    row = df.row(0, named=True)
    store.corpus(row["corpus"])  # one line for a corpus whose Parquet files are damaged
    return row


def document_latents(store: Store, doc: dict[str, Any], n: int = 30) -> pl.DataFrame:
    """The document's strongest latents: feature_id, label, value (max-pooled), n_active (tokens)."""
    df = store.sql("SELECT feature_id, value, n_active FROM activations WHERE doc_id = ? ORDER BY value DESC, "
                   "feature_id LIMIT ?", [int(doc["doc_id"]), int(n)])
    labels = feature_labels(store, doc["sae"], df["feature_id"].to_list())
    return df.join(labels, on="feature_id", how="left", maintain_order="left").select(
        "feature_id", "label", "value", "n_active")


__all__ = ["NotFoundError", "sae_info", "latent_sections", "latent_stats", "neighbours", "document", "document_latents"]
