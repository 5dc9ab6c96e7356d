"""The cluster result as a report section: a 2-D map of the documents, distinctive latents,
the cluster table and each cluster's most central documents."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from ..analysis.diff import feature_counts
from ..analysis.proposals import cluster_header, cluster_medians
from ..highlight.views import Highlighter, shade_legend
from ..store.corpusinfo import corpus_info
from .charts import cluster_latents_chart, cluster_map
from .page import NO_LINKS, ChartView, Example, ExampleGroup, Links, Section
from .project import idf_weighted, project_vectors
from .tables import frame_table

if TYPE_CHECKING:
    from ..store.handle import Store

MAP_DOCS = 1500  # points on the map; a stratified sample beyond that keeps reports small
TABLE_COLUMNS = ["cluster", "size", "share", "median_tokens", "top_labels", "top_diffs", "central"]
SNIPPET_TOKENS = 12


def _corpus_of(store: Store, doc_id: int) -> str:
    row = store.con.execute("SELECT name FROM corpora WHERE corpus_id = ?", [int(doc_id) >> 32]).fetchall()
    return row[0][0]


def _sample(df: pl.DataFrame, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(doc_ids, cluster) of at most ``n`` members, each cluster in proportion (at least 10)."""
    rng = np.random.default_rng(seed)
    total = max(int(df["size"].sum()), 1)
    ids, labs = [], []
    for r in df.iter_rows(named=True):
        members = np.asarray(r["doc_ids"], dtype=np.int64)
        take = min(len(members), max(10, int(round(n * len(members) / total))))
        pick = np.sort(rng.choice(len(members), take, replace=False)) if take < len(members) else np.arange(take)
        ids.append(members[pick])
        labs.append(np.full(take, r["cluster"]))
    return np.concatenate(ids), np.concatenate(labs)


def map_points(store: Store, df: pl.DataFrame, max_docs: int = MAP_DOCS, seed: int = 0) -> pl.DataFrame:
    """t-SNE of the documents' SAE embeddings (IDF-weighted max-pooled latents, as ``saeembed atlas``),
    coloured by cluster: only the sampled documents' activations leave the store."""
    from scipy import sparse


    ids, labs = _sample(df, max_docs, seed)
    info = corpus_info(store, _corpus_of(store, int(ids[0])))
    acts = store.con.execute("SELECT doc_id, feature_id, value FROM activations WHERE doc_id IN "
                             "(SELECT unnest(?::BIGINT[]))", [ids.tolist()]).fetchnumpy()
    row_of = {int(d): i for i, d in enumerate(ids.tolist())}
    rows = np.fromiter((row_of[int(d)] for d in acts["doc_id"]), dtype=np.int64, count=len(acts["doc_id"]))
    x = sparse.csr_matrix((acts["value"].astype(np.float32), (rows, acts["feature_id"].astype(np.int64))),
                          shape=(len(ids), int(info.d_sae)))
    xy = project_vectors(idf_weighted(x, feature_counts(store, info), int(info.n_docs)), seed)
    texts = store.sql("SELECT doc_id, left(text, 100) AS text FROM documents WHERE doc_id IN "
                      "(SELECT unnest(?::BIGINT[]))", [ids.tolist()])
    return (pl.DataFrame({"doc_id": ids, "cluster": labs, "x": xy[:, 0], "y": xy[:, 1]})
            .join(texts, on="doc_id", how="left"))


def cluster_section(store: Store, df: pl.DataFrame, examples: int = 3, links: Links = NO_LINKS,
                    seed: int = 0, shade: bool = False) -> Section:
    """Each central document is shaded for the first of its cluster's distinctive latents that fires
    in it (a distinctive latent is more frequent in the cluster, not present in every member)."""
    central = {r["cluster"]: (r["central_docs"][:examples], r["top_features"]) for r in df.iter_rows(named=True)}
    hl = Highlighter(store, [d for ds, _ in central.values() for d in ds],
                     [f for _, fs in central.values() for f in fs], shade=shade)
    labels = {f: lab for r in df.iter_rows(named=True) for f, lab in zip(r["top_features"], r["top_labels"])}

    def view(cluster: int, doc_id: int, window: int = 60):
        f = hl.first_firing(doc_id, central[cluster][1])
        return (hl.view(doc_id, [f], window) if f is not None else hl.plain(doc_id)), f

    def snippet(r: dict):
        ds = central[r["cluster"]][0]
        return view(r["cluster"], ds[0], SNIPPET_TOKENS)[0] if ds else None

    table = frame_table(df, TABLE_COLUMNS, docs={"central": snippet})
    groups = []
    for r in df.iter_rows(named=True):
        name = "unplaced / noise" if r["cluster"] < 0 else f"cluster {r['cluster']}"
        exs = []
        for d in central[r["cluster"]][0]:
            v, f = view(r["cluster"], d)
            caption = f"doc {d} · latent {f} {labels.get(f) or ''}" if f is not None else f"doc {d}"
            exs.append(Example(caption, v, links.doc(d, f)))
        groups.append(ExampleGroup(f"{name} · {r['size']} documents · most central documents", exs))
    charts = []
    if int(df["size"].sum()) >= 4:
        charts.append(ChartView("Map of the documents", "t-SNE of their SAE embeddings (IDF-weighted), coloured by "
                                f"cluster; at most {MAP_DOCS} documents; hover for the text",
                                cluster_map(map_points(store, df, seed=seed))))
    charts.append(ChartView("Distinctive latents", "share inside minus share outside each cluster",
                            cluster_latents_chart(df)))

    lines = cluster_header(df.row(0, named=True), int(df["size"].sum()), cluster_medians(df))
    lines[0] += (" (cluster −1: documents without any selected latent, or HDBSCAN noise)."
                 if (df["cluster"] < 0).any() else ".")
    return Section("Clusters", lines, charts, [("Clusters", table)], groups,
                   [shade_legend(shade, "the first of the cluster's distinctive latents that fires in the document")])


__all__ = ["cluster_section", "map_points"]
