"""Dataset diffing: which latents are more frequent in one corpus than in the others.

The paper ranks latents by ``freq_A − freq_B`` of binarised embeddings (present = max-pooled
activation > 0), keeps differences > 0.03 and the top 200; with several corpora the target is
compared with the *maximum* of the others, so a latent is reported only when the target has it more
often than every other corpus. We keep that ranking and add what a reader needs to trust a row:

- a two-proportion z-test per latent (pooled variance, Yates continuity correction, which keeps it
  close to Fisher's exact test at the small counts rare latents have) and Benjamini–Hochberg
  q-values over all tested latents of a target; ``min_support`` drops latents too rare to ever
  reach significance *before* the correction (independent filtering: the total count says nothing
  about which side has it under the null);
- a smoothed frequency ratio and a log odds ratio, because a 0.05 difference means something else
  at 0.06 vs 0.01 than at 0.55 vs 0.50;
- a paired mode for matched corpora (the same prompts answered by two models): McNemar's exact
  test on the discordant pairs. Pairs where both or neither answer has the latent carry no
  information about the difference, so the test is far more powerful than treating the two sides
  as independent samples.

Counting is one SQL aggregate per corpus (``queries/feature_doc_counts.sql``; paired:
``queries/paired_discordance.sql``); the statistics are vectorised numpy over all d_sae latents.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from ..errors import UserError
from ..options import resolve
from ..store.handle import reads_store
from ..store.queries import run_query
from ..store.stats import corpus_stats, present_counts
from .common import bh_qvalues, check_threshold, corpus_info, feature_labels, paired_rows, top_documents, with_labels
from .options import PAPER_MIN_DIFF, PAPER_TOP, DiffOptions

if TYPE_CHECKING:
    from ..store.handle import Store


COLUMNS = ["target", "rank", "feature_id", "label", "freq_target", "freq_other", "other", "diff", "ratio",
           "log_odds", "n_target", "n_other", "docs_target", "docs_other", "p_value", "q_value", "test",
           "examples_target", "examples_other"]


def feature_counts(store: Store, info: dict[str, Any], threshold: float = 0.0) -> np.ndarray:
    """Documents of one corpus in which each latent is present, as a dense [d_sae] array: from the
    corpus' latent statistics at threshold 0 (no scan), else one SQL aggregate."""
    if threshold == 0:
        return present_counts(corpus_stats(store, info, ["n_present"]), int(info["d_sae"]))
    df = run_query(store, "feature_doc_counts", {"lo": info["lo"], "hi": info["hi"], "threshold": float(threshold)})
    out = np.zeros(int(info["d_sae"]), dtype=np.int64)
    out[df["feature_id"].to_numpy().astype(np.int64)] = df["n_present"].to_numpy()
    return out


def two_proportion_test(k1: np.ndarray, n1: np.ndarray | int, k2: np.ndarray, n2: np.ndarray | int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Pooled two-proportion z statistics (Yates-corrected, signed) and two-sided p-values.

    Where the pooled proportion is 0 or 1 there is no evidence either way: z = 0, p = 1.
    """
    k1, k2 = np.asarray(k1, np.float64), np.asarray(k2, np.float64)
    n1, n2 = np.asarray(n1, np.float64), np.asarray(n2, np.float64)
    d = k1 / n1 - k2 / n2
    pooled = (k1 + k2) / (n1 + n2)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    corrected = np.maximum(np.abs(d) - 0.5 * (1 / n1 + 1 / n2), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, np.sign(d) * corrected / np.where(se > 0, se, 1.0), 0.0)
    from scipy.special import ndtr  # the normal CDF itself: stats.norm.sf adds 3× its cost in checks

    return z, np.where(se > 0, 2 * ndtr(-np.abs(z)), 1.0)


def mcnemar_test(only_a: np.ndarray, only_b: np.ndarray) -> np.ndarray:
    """Exact two-sided McNemar p-values: a binomial test of the discordant pairs against 1/2."""
    only_a, only_b = np.asarray(only_a), np.asarray(only_b)
    n = only_a + only_b
    lo = np.minimum(only_a, only_b)
    from scipy import stats

    p = np.where(n > 0, 2 * stats.binom.cdf(lo, np.maximum(n, 1), 0.5), 1.0)
    return np.minimum(p, 1.0)


@dataclass(frozen=True)
class _Cut:
    """Which tested latents of a target are reported: the filters and ranking of ``diff``."""

    min_diff: float
    fdr: float | None
    top: int | None


def _frame(target: str, other: np.ndarray, fids: np.ndarray, kt: np.ndarray, ko: np.ndarray, nt: np.ndarray,
           no: np.ndarray, log_odds: np.ndarray, p: np.ndarray, test: str, cut: _Cut) -> pl.DataFrame:
    """The reported rows of one target, best first: BH q-values over every tested latent, then the
    ``diff``/``fdr`` filters and the ``top`` cut — in numpy, so only the reported rows (≤ ``top``,
    not all d_sae tested latents) become a frame."""
    ft, fo = kt / nt, ko / no
    d = ft - fo
    q = bh_qvalues(p)
    keep = d >= cut.min_diff
    if cut.fdr is not None:
        keep &= q <= cut.fdr
    idx = np.flatnonzero(keep)
    idx = idx[np.lexsort((fids[idx], p[idx], -d[idx]))]  # diff desc, then p asc, then feature id
    if cut.top is not None:
        idx = idx[:cut.top]
    ratio = ((kt + 0.5) / (nt + 1)) / ((ko + 0.5) / (no + 1))
    return pl.DataFrame({
        "target": pl.Series([target] * len(idx), dtype=pl.String),
        "rank": np.arange(1, len(idx) + 1, dtype=np.int32),
        "feature_id": fids[idx].astype(np.int32), "freq_target": ft[idx].astype(np.float64),
        "freq_other": fo[idx].astype(np.float64), "other": pl.Series(list(other[idx]), dtype=pl.String),
        "diff": d[idx].astype(np.float64), "ratio": ratio[idx].astype(np.float64),
        "log_odds": log_odds[idx].astype(np.float64), "n_target": kt[idx].astype(np.int64),
        "n_other": ko[idx].astype(np.int64), "docs_target": nt[idx].astype(np.int64),
        "docs_other": no[idx].astype(np.int64), "p_value": p[idx].astype(np.float64),
        "q_value": q[idx].astype(np.float64), "test": pl.Series([test] * len(idx), dtype=pl.String),
    })


def _finish(store: Store, out: pl.DataFrame, infos: dict[str, dict], sae: str, n_examples: int) -> pl.DataFrame:
    """Labels and example doc ids of the reported rows (read for those latents only)."""
    out = with_labels(out, feature_labels(store, sae, out["feature_id"].unique().to_list()))
    tops: dict[str, dict[int, list[int]]] = {}
    if n_examples > 0:
        for name, info in infos.items():
            feats = out.filter((pl.col("target") == name) | (pl.col("other") == name))["feature_id"].unique()
            tops[name] = top_documents(store, info, feats.to_list(), n_examples)
    ex_t = [tops.get(t, {}).get(f, []) for t, f in out.select("target", "feature_id").iter_rows()]
    ex_o = [tops.get(o, {}).get(f, []) for o, f in out.select("other", "feature_id").iter_rows()]
    out = out.with_columns(pl.Series("examples_target", ex_t, pl.List(pl.Int64)),
                           pl.Series("examples_other", ex_o, pl.List(pl.Int64)))
    return out.select(COLUMNS)


@reads_store
def diff(store: Store | str | Path, corpora: list[str], options: DiffOptions | None = None,
         **kwargs: Any) -> pl.DataFrame:
    """Latents over-represented in each target corpus compared with the others, best first.

    Options: :class:`~saeembed.analysis.options.DiffOptions` (as an object or as keywords).
    Each corpus is the target in turn (or only ``target``). Its frequency is compared with the
    *maximum* frequency among the other corpora (paper) and tested against the corpus holding that
    maximum (column ``other``). Rows need ``diff >= min_diff`` and, when ``fdr`` is set,
    ``q_value <= fdr``; at most ``top`` rows per target. ``min_support`` (documents having the
    latent, both sides together) removes latents before the BH correction.

    ``paired``: exactly two corpora of matched documents, paired by row (row i of A answers the same
    prompt as row i of B) or by the meta field ``pair_key``; frequencies are over the pairs and the
    test is McNemar's. Columns: target, rank, feature_id, label, freq_target, freq_other, other,
    diff, ratio (smoothed freq ratio), log_odds, n_target / n_other (documents with the latent),
    docs_target / docs_other (documents compared), p_value, q_value, test (``z`` or ``mcnemar``),
    examples_target / examples_other (doc ids where the latent fires most strongly on each side).

    Paper settings: ``fdr=None`` (no test), ``min_diff=0.03``, ``top=200``, ``threshold=0``.
    """
    o = resolve(DiffOptions, options, kwargs, "diff")
    st = store
    threshold = check_threshold(o.threshold)
    corpora = list(corpora)
    if len(corpora) < 2:
        raise UserError("diff needs at least two corpora, e.g. saeembed diff --store S A B")
    if len(set(corpora)) != len(corpora):
        raise UserError("a corpus is named twice; diff compares different corpora")
    if o.min_support < 0 or (o.top is not None and o.top <= 0) or (o.fdr is not None and not 0 < o.fdr <= 1):
        raise UserError("--min-support must be >= 0, --top > 0 and --fdr in (0, 1]")
    if o.examples < 0:
        raise UserError("the number of example documents must be >= 0")
    infos = {c: corpus_info(st, c) for c in corpora}
    saes = {i["sae"] for i in infos.values()}
    if len(saes) != 1:
        raise UserError(f"the corpora were encoded with different SAEs ({', '.join(sorted(saes))}); their latents "
                        "are not comparable, so encode them with the same --sae")
    sae = saes.pop()
    if o.target is not None and o.target not in infos:
        raise UserError(f"--target {o.target!r} is not among the compared corpora ({', '.join(corpora)}); add it")
    for c, i in infos.items():
        if not i["n_docs"]:
            raise UserError(f"corpus {c!r} has no documents; encode some or leave it out")
    if o.pair_key is not None and not o.paired:
        raise UserError("--pair-key only applies with --paired")
    targets = [o.target] if o.target else corpora
    d_sae = int(next(iter(infos.values()))["d_sae"])
    fids = np.arange(d_sae, dtype=np.int32)
    support = max(int(o.min_support), 1)  # a latent absent on both sides cannot be tested
    cut = _Cut(o.min_diff, o.fdr, o.top)

    if o.paired:
        if len(corpora) != 2:
            raise UserError("--paired compares exactly two corpora of matched documents")
        parts = _paired(st, infos, corpora, targets, o.pair_key, threshold, fids, support, cut)
    else:
        counts = {c: feature_counts(st, infos[c], threshold) for c in corpora}
        ns = {c: int(infos[c]["n_docs"]) for c in corpora}
        parts = []
        for t in targets:
            others = [c for c in corpora if c != t]
            freqs = np.stack([counts[c] / ns[c] for c in others])
            which = freqs.argmax(axis=0)  # the other corpus where the latent is most frequent
            ko = np.stack([counts[c] for c in others])[which, fids]
            no = np.array([ns[c] for c in others], dtype=np.float64)[which]
            kt, nt = counts[t], np.full(d_sae, float(ns[t]))
            keep = kt + ko >= support
            _, p = two_proportion_test(kt, nt, ko, no)
            lor = np.log((kt + 0.5) * (no - ko + 0.5) / ((nt - kt + 0.5) * (ko + 0.5)))
            other = np.array(others, dtype=object)[which]
            parts.append(_frame(t, other[keep], fids[keep], kt[keep], ko[keep], nt[keep], no[keep], lor[keep],
                                p[keep], "z", cut))
    return _finish(st, pl.concat(parts), infos, sae, o.examples)


def _paired(st: Store, infos: dict[str, dict], corpora: list[str], targets: list[str], pair_key: str | None,
            threshold: float, fids: np.ndarray, support: int, cut: _Cut) -> list[pl.DataFrame]:
    a, b = corpora
    ia, ib = infos[a], infos[b]
    rows_a, rows_b = paired_rows(st, ia, ib, pair_key)
    df = run_query(st, "paired_discordance", {"a_lo": ia["lo"], "a_hi": ia["hi"], "b_lo": ib["lo"], "b_hi": ib["hi"],
                                              "rows_a": rows_a.tolist(), "rows_b": rows_b.tolist(),
                                              "threshold": threshold})
    counts = {k: np.zeros(len(fids), np.int64) for k in ("only_a", "only_b", "both")}
    for k, arr in counts.items():
        arr[df["feature_id"].to_numpy().astype(np.int64)] = df[k].to_numpy()
    n = np.full(len(fids), float(len(rows_a)))
    parts = []
    for t, o, ot, oo in ((a, b, counts["only_a"], counts["only_b"]), (b, a, counts["only_b"], counts["only_a"])):
        if t not in targets:
            continue
        kt, ko = ot + counts["both"], oo + counts["both"]
        keep = kt + ko >= support
        p = mcnemar_test(ot, oo)
        lor = np.log((ot + 0.5) / (oo + 0.5))  # conditional (discordant-pair) odds ratio
        other = np.array([o] * len(fids), dtype=object)
        parts.append(_frame(t, other[keep], fids[keep], kt[keep], ko[keep], n[keep], n[keep], lor[keep], p[keep],
                            "mcnemar", cut))
    return parts


__all__ = ["diff", "feature_counts", "two_proportion_test", "mcnemar_test", "PAPER_MIN_DIFF", "PAPER_TOP"]
