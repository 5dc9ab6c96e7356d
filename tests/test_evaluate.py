"""The evaluation harness' metrics: the README's tables are only as right as these."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from saeembed.evaluate import average_precision, full_ranking, precision_at


@pytest.mark.parametrize("seed", range(5))
def test_average_precision_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    relevant = rng.random(200) < 0.1
    relevant[rng.integers(200)] = True
    # a ranking given in order = scores strictly decreasing with rank
    expected = average_precision_score(relevant, -np.arange(200))
    assert average_precision(relevant) == pytest.approx(expected)


def test_precision_at_and_no_positive() -> None:
    rel = np.array([True, False, True, True, False])
    assert precision_at(rel, 2) == 0.5 and precision_at(rel, 4) == 0.75
    assert np.isnan(average_precision(np.zeros(5, dtype=bool)))


def test_full_ranking_keeps_order_then_appends_the_rest_once() -> None:
    ids = np.arange(10, 20)
    order = full_ranking([15, 12], ids, np.random.default_rng(0))
    assert order[:2].tolist() == [15, 12]
    assert sorted(order.tolist()) == ids.tolist()


def test_task_halves_fixed_balanced_and_independent_of_order() -> None:
    from collections import Counter

    from saeembed.evaluate import CORPORA, RETRIEVAL_TASKS, task_halves

    halves = task_halves()
    assert set(halves) == {t.name for t in RETRIEVAL_TASKS}
    assert task_halves(list(reversed(RETRIEVAL_TASKS))) == halves  # a rule on names, not on positions
    per_dataset = Counter((CORPORA[t.corpus].dataset, halves[t.name]) for t in RETRIEVAL_TASKS)
    for dataset in {CORPORA[t.corpus].dataset for t in RETRIEVAL_TASKS}:
        dev, held = per_dataset[(dataset, "dev")], per_dataset[(dataset, "held-out")]
        assert held >= 1 and dev - held in (0, 1)


def test_previous_sections_split_a_report_by_task() -> None:
    from saeembed.evaluate.report import previous_sections

    report = ("### Property retrieval: MAP\n\n| a |\n\n### Property retrieval: precision@50\n\n| b |\n\n"
              "### Dataset diffing: replication\n\n| c |\n\n**M4**: top\n\n| d |\n\n### Encode speed\n\n| e |\n")
    parts = previous_sections(report)
    assert set(parts) == {"retrieval", "diffing", "speed"}
    assert "precision@50" in parts["retrieval"] and "| b |" in parts["retrieval"]
    assert parts["diffing"].endswith("| d |") and "Encode" not in parts["diffing"]


def test_speed_step_times_pipeline_and_bare_forward_on_the_same_texts(tmp_path, smollm2_reader, test_sae_spec):
    """The evaluation's encode-speed row (README: pipeline ≥ 0.9× the bare forward) comes from real timings."""
    import polars as pl

    from saeembed.evaluate.harness import Harness
    from saeembed.evaluate.speed import eval_speed
    from tests.conftest import REPO

    data = tmp_path / "data"
    (data / "goemotions").mkdir(parents=True)
    sample = pl.read_parquet(REPO / "datasets" / "goemotions" / "sample.parquet")
    # the shared dataset's layout: the columns the evaluation drops before encoding must be there
    sample.with_columns(split=pl.lit("test"), label_ids=pl.lit("")).write_parquet(data / "goemotions" / "data.parquet")
    h = Harness(tmp_path / "store.duckdb", data, docs=16, sae=test_sae_spec, loaded_reader=smollm2_reader)
    row = eval_speed(h, docs=12, corpus="goemotions").row(0, named=True)
    assert row["docs"] == 12 and row["device"] == "cpu" and row["dtype"] in {"float32", "bfloat16"}
    assert row["bare forward tok/s"] > 0 and row["pipeline tok/s"] > 0
    assert 0.05 < row["ratio"] < 20  # a real ratio of two timings, not a constant or a division by zero
    assert row["ratio low"] <= row["ratio high"] and row["ratio low"] > 0
    assert h.frame("goemotions").height == 16 and "split" not in h.frame("goemotions").columns


def test_steering_summary_reports_each_half_and_the_ratio_to_the_unfiltered_clustering() -> None:
    """Two dev cases and one held-out case with known NMIs: the summary's means, ratios and the lowest topic
    case per half, and the section names every half and the reason auto gave."""
    import polars as pl

    from saeembed.evaluate.steering import METHODS, half_of, steering_section, steering_summary

    nmi = {("ag_news", "topic"): (0.6, 0.2), ("amazon", "sentiment"): (0.2, 0.02), ("m4_mixed", "genre"): (0.3, 0.3)}
    rows = []
    for (corpus, query), (auto, unfiltered) in nmi.items():
        kind = "property" if query == "sentiment" else "topic"
        for method in METHODS:
            value = {"auto": auto, "unfiltered": unfiltered}.get(method, 0.1)
            how = {"selection": "topics", "source": "corpus", "along": "a/b", "why": f"because {corpus}"}
            rows.append({"half": half_of(corpus), "corpus": corpus, "query": query, "truth": "t", "kind": kind, "k": 2,
                         "method": method, "NMI": value} | (how if method == "auto" else {}))
    df = pl.DataFrame(rows, infer_schema_length=None)
    dev, held = steering_summary(df).to_dicts()
    assert (dev["half"], dev["cases"], held["half"], held["cases"]) == ("dev", 2, "held-out", 1)
    assert dev["mean auto"] == pytest.approx(0.4) and dev["mean unfiltered"] == pytest.approx(0.11)
    assert dev["auto / unfiltered (means)"] == pytest.approx(0.4 / 0.11)
    assert dev["auto / unfiltered (mean of ratios)"] == pytest.approx((3 + 10) / 2)
    assert dev["min auto, topic cases"] == pytest.approx(0.6) and held["min auto, topic cases"] == pytest.approx(0.3)
    assert held["auto / unfiltered (means)"] == pytest.approx(1.0)
    text = steering_section(df)
    assert "| held-out | m4_mixed | genre |" in text and "- amazon \"sentiment\": because amazon" in text


def test_rerunning_one_steering_half_keeps_the_other_halfs_rows_from_the_previous_report() -> None:
    """A dev-only rerun replaces the dev rows and carries the held-out rows over unchanged (JSON round trip)."""
    import json

    import polars as pl

    from saeembed.evaluate.steering import steering_summary, with_other_halves

    def rows(half: str, corpus: str, auto: float) -> list[dict]:
        return [{"half": half, "corpus": corpus, "query": "topic", "truth": "t", "kind": "topic", "k": 4,
                 "method": m, "NMI": v} | ({"selection": "topics", "source": "corpus", "along": "a/b", "why": "w"}
                                           if m == "auto" else {})
                for m, v in (("auto", auto), ("labels", 0.1), ("unfiltered", 0.1), ("dense k-means", 0.2))]

    previous = json.loads(json.dumps(rows("dev", "ag_news", 0.5) + rows("held-out", "m4_mixed", 0.6)))
    new_dev = pl.DataFrame(rows("dev", "ag_news", 0.7) + rows("dev", "ag_titles", 0.4), infer_schema_length=None)
    merged = with_other_halves(new_dev, previous, ("dev",))
    dev, held = steering_summary(merged).to_dicts()
    assert (dev["cases"], dev["mean auto"]) == (2, pytest.approx(0.55))
    assert (held["cases"], held["mean auto"]) == (1, pytest.approx(0.6))
    assert with_other_halves(new_dev, previous, ("dev", "held-out")).equals(new_dev)


def test_label_quality_compares_label_sets_on_the_same_windows(tmp_path, smollm2_reader, test_sae_spec):
    """The evaluation's label-quality rows: shares are of all top diff latents, more candidate labels can
    only raise the share, and a 'before' file holding the shipped labels scores exactly as they do."""
    import polars as pl

    from saeembed.evaluate.harness import Harness
    from saeembed.evaluate.labels import eval_label_quality
    from saeembed.sae import open_sae
    from tests.conftest import DATASETS

    shipped = open_sae(test_sae_spec).labels
    if shipped is None:
        pytest.skip("the test SAE ships no labels")
    h = Harness(tmp_path / "store.duckdb", tmp_path, docs=150, sae=test_sae_spec, loaded_reader=smollm2_reader)
    for name in ("positive", "negative"):
        h.ensure(name, pl.read_parquet(DATASETS / "goemotions" / f"{name}.parquet").head(150).select("text"))
    res = eval_label_quality(h, before=shipped, pairs=[("positive", "negative", "positive vs negative")],
                             max_tokens=1500)
    by = {r["labels"]: r for r in res.to_dicts()}
    assert list(by) == ["before", "shipped", "shipped + descriptors"]
    assert all(r["latents"] > 10 and 0 <= r["share at or above floor"] <= 1 for r in by.values())
    for r in by.values():  # a share of the top latents, not of those that happen to have a scored label
        assert r["share at or above floor"] * r["latents"] == pytest.approx(round(r["share at or above floor"]
                                                                                 * r["latents"]))
    assert by["before"] == {**by["shipped"], "labels": "before"}
    assert by["shipped + descriptors"]["share at or above floor"] >= by["shipped"]["share at or above floor"]
    assert by["shipped + descriptors"]["scored"] > 0


def test_a_missing_labels_before_file_is_refused_before_anything_is_written(tmp_path, capsys) -> None:
    from saeembed.evaluate.report import main

    with pytest.raises(SystemExit) as exit_:
        main(["--only", "labels", "--labels-before", str(tmp_path / "nope.parquet"),
              "--store", str(tmp_path / "eval" / "e.duckdb"), "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    assert "--labels-before" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not any(tmp_path.iterdir())  # no store, no report
