"""Vega-Lite charts (built with Altair) for each analysis and for the browser's latent pages.

Every function takes a result frame (or a small derived one) and returns an Altair chart; the
page embeds its spec, the notebook view renders it to SVG. Charts show the head of a result
(the table below them has every row), so a 200-row diff stays legible.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from .assets import require_faces

WIDTH = 520
LABEL_CHARS = 42
Z95 = 1.959963984540054


def _alt():
    require_faces()
    import altair as alt

    return alt


def latent_name(feature_id: int, label: str | None) -> str:
    label = " ".join(str(label or "").split())
    name = f"{feature_id} {label}".strip()
    return name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 1] + "…"


def wilson_interval(k: np.ndarray, n: np.ndarray, z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
    """95 % Wilson score interval of k successes in n trials: honest at 0/n and n/n, unlike ±2 SE."""
    k, n = np.asarray(k, np.float64), np.maximum(np.asarray(n, np.float64), 1)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)


def diff_chart(df: pl.DataFrame, per_target: int = 25):
    """Share of documents with each latent in the target and in the compared corpus, with 95 %
    Wilson intervals; one panel per target, latents in rank order."""
    alt = _alt()
    top = df.filter(pl.col("rank") <= per_target)
    parts = []
    for side, freq, k, n, corpus in (("target", "freq_target", "n_target", "docs_target", "target"),
                                     ("other", "freq_other", "n_other", "docs_other", "other")):
        lo, hi = wilson_interval(top[k].to_numpy(), top[n].to_numpy())
        parts.append(top.select(
            "target", "rank", "feature_id",
            pl.struct("feature_id", "label").map_elements(lambda s: latent_name(s["feature_id"], s["label"]),
                                                          return_dtype=pl.String).alias("latent"),
            pl.col(corpus).alias("corpus"), pl.col(freq).alias("share"), pl.col(k).alias("documents"),
            pl.col(n).alias("of"), pl.lit(side).alias("side"),
        ).with_columns(pl.Series("low", lo), pl.Series("high", hi)))
    data = pl.concat(parts)
    panels = []
    for target in dict.fromkeys(data["target"].to_list()):
        base = alt.Chart(data.filter(pl.col("target") == target)).encode(
            y=alt.Y("latent:N", sort=alt.EncodingSortField(field="rank", op="min", order="ascending"), title=None,
                    axis=alt.Axis(labelLimit=320)),
            color=alt.Color("corpus:N", title="corpus"))
        rules = base.mark_rule(strokeWidth=2, opacity=0.6).encode(x=alt.X("low:Q"), x2="high:Q")
        points = base.mark_point(filled=True, size=50).encode(
            x=alt.X("share:Q", title="share of documents where the latent fires (95% interval)",
                    scale=alt.Scale(domain=[0, 1])),
            tooltip=["latent", "corpus", alt.Tooltip("share:Q", format=".3f"), "documents", "of",
                     alt.Tooltip("low:Q", format=".3f"), alt.Tooltip("high:Q", format=".3f")])
        panels.append(alt.layer(rules, points).properties(title=f"more frequent in {target}", width=WIDTH - 180,
                                                          height=alt.Step(15)))
    return alt.vconcat(*panels)


def correlate_chart(df: pl.DataFrame, top: int = 30):
    """NPMI heatmap of the top pairs: rows are latent a, columns latent b (rank order)."""
    alt = _alt()
    head = df.head(top)
    data = head.select(
        pl.struct("feature_a", "label_a").map_elements(lambda s: latent_name(s["feature_a"], s["label_a"]),
                                                       return_dtype=pl.String).alias("latent a"),
        pl.struct("feature_b", "label_b").map_elements(lambda s: latent_name(s["feature_b"], s["label_b"]),
                                                       return_dtype=pl.String).alias("latent b"),
        "npmi", "n_ab", "n_a", "n_b")
    order_a = list(dict.fromkeys(data["latent a"].to_list()))
    order_b = list(dict.fromkeys(data["latent b"].to_list()))
    lo = float(data["npmi"].min()) if data.height else 0.0
    return alt.Chart(data).mark_rect(stroke="white").encode(
        x=alt.X("latent b:N", sort=order_b, axis=alt.Axis(labelAngle=-40, labelLimit=200)),
        y=alt.Y("latent a:N", sort=order_a, axis=alt.Axis(labelLimit=260)),
        color=alt.Color("npmi:Q", scale=alt.Scale(scheme="oranges", domain=[min(lo, 0.99), 1.0]), title="NPMI"),
        tooltip=["latent a", "latent b", alt.Tooltip("npmi:Q", format=".3f"), "n_ab", "n_a", "n_b"],
    ).properties(width=alt.Step(16), height=alt.Step(16))


def cluster_map(points: pl.DataFrame):
    """Documents on a 2-D map (columns x, y, cluster, doc_id, text), coloured by cluster."""
    alt = _alt()
    return alt.Chart(points.with_columns(pl.col("cluster").cast(pl.String))).mark_circle(size=28, opacity=0.75).encode(
        x=alt.X("x:Q", axis=None), y=alt.Y("y:Q", axis=None), color=alt.Color("cluster:N", title="cluster"),
        tooltip=["cluster", alt.Tooltip("doc_id:Q", format="d"), "text"],
    ).properties(width=WIDTH, height=420).interactive()


def cluster_latents_chart(df: pl.DataFrame):
    """Each cluster's distinctive latents: frequency inside minus outside the cluster."""
    alt = _alt()
    rows = []
    for r in df.iter_rows(named=True):
        for f, lab, d in zip(r["top_features"], r["top_labels"], r["top_diffs"]):
            rows.append({"cluster": str(r["cluster"]), "latent": latent_name(f, lab), "difference": d})
    data = pl.DataFrame(rows, schema={"cluster": pl.String, "latent": pl.String, "difference": pl.Float64})
    return alt.Chart(data).mark_bar().encode(
        x=alt.X("difference:Q", title="share inside − share outside the cluster"),
        y=alt.Y("latent:N", sort="-x", title=None, axis=alt.Axis(labelLimit=300)),
        color=alt.Color("cluster:N", legend=None),
        tooltip=["cluster", "latent", alt.Tooltip("difference:Q", format=".3f")],
    ).properties(width=WIDTH - 240, height=alt.Step(14)).facet(row=alt.Row("cluster:N")).resolve_scale(y="independent")


def search_chart(df: pl.DataFrame):
    """Scores of the ranked documents (hover: the text)."""
    alt = _alt()
    cols = ["rank", "doc_id", "score"] + [c for c in ("top_label",) if c in df.columns]
    data = df.select(cols + [pl.col("text").str.slice(0, 120)])
    tooltip = ["rank", alt.Tooltip("doc_id:Q", format="d"), alt.Tooltip("score:Q", format=".4f")]
    tooltip += ["top_label"] if "top_label" in df.columns else []
    return alt.Chart(data).mark_bar().encode(
        x=alt.X("score:Q"), y=alt.Y("rank:O", title="rank"),
        color=alt.Color("top_label:N", title="top latent") if "top_label" in df.columns else alt.value("#4c78a8"),
        tooltip=tooltip + ["text"],
    ).properties(width=WIDTH - 200, height=alt.Step(14))


def histogram_chart(bins: pl.DataFrame):
    """Pre-binned activations (corpus, low, high, documents): one bar per bin and corpus."""
    alt = _alt()
    return alt.Chart(bins).mark_bar(opacity=0.7).encode(
        x=alt.X("low:Q", title="max-pooled activation", bin="binned"), x2="high:Q",
        y=alt.Y("documents:Q", stack=None), color=alt.Color("corpus:N"),
        tooltip=["corpus", alt.Tooltip("low:Q", format=".3f"), alt.Tooltip("high:Q", format=".3f"), "documents"],
    ).properties(width=WIDTH - 120, height=180)


def density_chart(density: pl.DataFrame):
    """Share of each corpus' documents where a latent fires (corpus, share, documents, of)."""
    alt = _alt()
    lo, hi = wilson_interval(density["documents"].to_numpy(), density["of"].to_numpy())
    data = density.with_columns(pl.Series("low", lo), pl.Series("high", hi))
    base = alt.Chart(data).encode(y=alt.Y("corpus:N", title=None))
    return alt.layer(
        base.mark_bar().encode(x=alt.X("share:Q", title="share of documents (95% interval)"),
                               color=alt.Color("corpus:N", legend=None),
                               tooltip=["corpus", alt.Tooltip("share:Q", format=".4f"), "documents", "of"]),
        base.mark_rule().encode(x="low:Q", x2="high:Q"),
    ).properties(width=WIDTH - 160, height=alt.Step(22))


__all__ = ["diff_chart", "correlate_chart", "cluster_map", "cluster_latents_chart", "search_chart",
           "histogram_chart", "density_chart", "wilson_interval", "latent_name"]
