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
