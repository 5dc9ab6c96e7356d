"""Cluster outputs say how far the clusters are length bins, on GoEmotions comments encoded with the
shipped reader: max-pooled presence grows with length, and the paper's unfiltered Jaccard clustering
of these comments sorts them largely by length."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from click.testing import CliRunner

from saeembed.analysis import cluster
from saeembed.analysis.cluster import length_by_cluster
from saeembed.api import open_store
from saeembed.cli import main


def test_length_share_is_the_between_cluster_share_of_tokens_gth() -> None:
    tokens_ = np.array([4, 5, 4, 5, 40, 50, 40, 50], float)
    medians, share = length_by_cluster(tokens_, np.array([0, 0, 0, 0, 1, 1, 1, 1]))
    assert medians == {0: 4.5, 1: 45.0} and share > 0.95
    _, mixed = length_by_cluster(tokens_, np.array([0, 1, 0, 1, 0, 1, 0, 1]))
    assert mixed < 0.05
    _, unplaced = length_by_cluster(tokens_, np.array([0, 0, 0, 0, -1, -1, -1, -1]))
    assert unplaced is None  # one cluster: nothing lies between clusters


def test_unfiltered_clusters_of_comments_are_flagged_as_length_bins(real_store: Path) -> None:
    st = open_store(real_store)
    res = cluster(st, "ge", unfiltered=True, k=4)
    tokens = dict(st.sql("SELECT doc_id, n_tokens FROM documents").iter_rows())
    for r in res.iter_rows(named=True):
        assert r["median_tokens"] == np.median([tokens[d] for d in r["doc_ids"]])
    share = res["length_share"][0]
    assert share > 0.25 and res["length_share"].n_unique() == 1
    along = cluster(st, "ge", query="gratitude, thanks", k=3, select="labels")
    assert along["length_share"][0] < share
    out = CliRunner().invoke(main, ["cluster", "--store", str(real_store), "ge", "--unfiltered", "--k", "4"])
    assert out.exit_code == 0, out.output
    assert f"document length: {share:.0%} of the variance" in out.stderr and "largely by length" in out.stderr
    js = CliRunner().invoke(main, ["cluster", "--store", str(real_store), "ge", "--unfiltered", "--k", "4",
                                   "--format", "json"])
    assert pl.read_json(js.stdout.encode())["length_share"].to_list() == [share] * res.height
