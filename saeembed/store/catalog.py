"""Read-only queries over a store, as polars frames."""

from __future__ import annotations

from typing import Any, Iterable

import duckdb
import numpy as np
import polars as pl

from ..errors import UserError
from ..ids import corpus_range
from .parquet import check_readable
from .schema import CONTEXT_LABEL_SOURCE, LABEL_FLOOR


class StoreReader:
    """Queries over a store; every method returns polars frames (or CSR for embeddings)."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def sql(self, query: str, params: list | dict | None = None) -> pl.DataFrame:
        try:
            rel = self.con.sql(query, params=params) if params is not None else self.con.sql(query)
            return rel.pl() if rel is not None else pl.DataFrame()
        except duckdb.Error as exc:
            raise UserError(f"SQL error: {str(exc).splitlines()[0]}") from None

    def has_tables(self) -> bool:
        # duckdb_tables() costs a third of information_schema.tables, and every lookup of a corpus asks
        return bool(self.con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'corpora'"
                                     ).fetchall()[0][0])

    @staticmethod
    def empty_corpora() -> pl.DataFrame:
        return pl.DataFrame(schema={"corpus_id": pl.Int32, "name": pl.String})

    def corpora(self) -> pl.DataFrame:
        if not self.has_tables():
            return self.empty_corpora()
        return self.sql(
            "SELECT corpus_id, name, n_docs, n_tokens, reader, layer, sae, pooling, source, created_at "
            "FROM corpora ORDER BY corpus_id")

    def corpus(self, name: str) -> dict[str, Any]:
        rows = self.sql("SELECT * FROM corpora WHERE name = ?", [name]) if self.has_tables() else pl.DataFrame()
        if rows.height == 0:
            known = ", ".join(self.corpora()["name"].to_list()) or "none"
            raise UserError(f"no corpus named {name!r} in this store (corpora: {known}); check the name")
        row = rows.row(0, named=True)
        # a Parquet-kept corpus whose files this connection could not use is one line, not an empty result

        check_readable(self.con, row["corpus_id"])
        return row

    def features(self, sae: str | None = None, feature_ids: Iterable[int] | None = None,
                 contexts: bool = True) -> pl.DataFrame:
        """One row per latent with the label analyses show (only ``feature_ids`` when given: an analysis
        that reports 200 latents need not rank the labels of all 65,536).

        Every source's ``score`` is the label's detection AUC (:mod:`saeembed.labels.score`), so they
        compare: the best label scoring at least ``LABEL_FLOOR`` is shown; else an unscored label (an
        import not yet measured); else the latent's strongest context (source ``context``), rather
        than a label measured to name nothing; else the best label below the floor. ``contexts=False``
        leaves contexts out (for label files, which hold labels only). The rule in SQL, for speed on
        65,536 latents; :func:`saeembed.labelrule.shown_labels` is the same rule on a frame.
        """
        conds, params = [], {}
        if sae:
            conds.append("sae = $sae")
            params["sae"] = sae
        if feature_ids is not None:
            conds.append("feature_id IN (SELECT unnest($ids::INTEGER[]))")
            params["ids"] = [int(f) for f in feature_ids]
        if not contexts:
            conds.append("label_source != $context")
        where = ("WHERE " + " AND ".join(conds)) if conds else ""
        return self.sql(
            f"""
            SELECT sae, feature_id, label, label_source, score, density, description FROM (
              SELECT *, row_number() OVER (PARTITION BY sae, feature_id ORDER BY
                         CASE WHEN label_source = $context THEN 2 WHEN score >= $floor THEN 0
                              WHEN score IS NULL THEN 1 ELSE 3 END,
                         score DESC NULLS LAST, label_source) AS rk
              FROM features {where}) WHERE rk = 1 ORDER BY sae, feature_id
            """,
            {"context": CONTEXT_LABEL_SOURCE, "floor": LABEL_FLOOR, **params},
        )

    def embeddings(self, corpus: str, pooling: str = "max") -> tuple[Any, np.ndarray]:
        """The corpus as a scipy CSR matrix [n_docs, d_sae] plus its doc ids (row order).

        ``pooling``: ``max`` (default), ``sum``, ``mean`` (sum / pooled tokens), ``count`` (tokens where
        the latent fired) or ``share`` (count / pooled tokens). Why ``share``: a property of the whole
        document (its sentiment) shows in how much of it a latent fires on, which the max loses once
        every long document has one such token (``scripts/sentiment_probe.py`` measures it).
        """
        from scipy import sparse

        info = self.corpus(corpus)
        d_sae = self.con.execute("SELECT d_sae FROM saes WHERE sae = ?", [info["sae"]]).fetchall()[0][0]
        expr = {"max": "a.value", "sum": "a.total", "count": "a.n_active",
                "mean": "a.total / greatest(d.n_tokens, 1)",
                "share": "a.n_active / greatest(d.n_tokens, 1)"}.get(pooling)
        if expr is None:
            raise UserError(f"unknown pooling {pooling!r}; use max, sum, mean, count or share")
        docs = self.con.execute(
            "SELECT doc_id FROM documents WHERE corpus_id = ? ORDER BY doc_id", [info["corpus_id"]]
        ).fetchnumpy()["doc_id"]
        # the corpus is one doc_id range, which prunes row groups; only mean and share pooling need
        # the documents' token counts (a join is 2× slower on the latent-major layout)
        lo, hi = corpus_range(info["corpus_id"])
        joined = pooling in ("mean", "share")
        source = "activations a JOIN documents d USING (doc_id)" if joined else "activations a"
        acts = self.con.execute(
            f"""SELECT a.doc_id, a.feature_id, ({expr})::FLOAT AS v FROM {source}
                WHERE a.doc_id BETWEEN ? AND ?""",
            [lo, hi],
        ).fetchnumpy()
        rows = np.searchsorted(docs, acts["doc_id"])
        mat = sparse.csr_matrix(
            (acts["v"].astype(np.float32), (rows, acts["feature_id"].astype(np.int64))),
            shape=(len(docs), int(d_sae)),
        )
        mat.sort_indices()
        return mat, docs
