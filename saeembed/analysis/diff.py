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

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from ..errors import UserError
from ..options import resolve
from ..store.corpusinfo import CorpusInfo, corpus_info
from ..store.handle import reads_store
from ..store.queries import run_query
from ..store.stats import corpus_stats, present_counts
from ..store.strata import BINS_PER_OCTAVE, CorpusLengths, corpus_lengths, latent_counts
from .common import bh_qvalues, check_threshold, feature_labels, paired_rows, top_documents, with_labels
from .length import Adjusted, logistic_length, mantel_haenszel, paired_length
from .options import CONTROLS, PAPER_MIN_DIFF, PAPER_TOP, UBIQUITOUS, DiffOptions

if TYPE_CHECKING:
    from ..store.handle import Store


COLUMNS = ["target", "rank", "feature_id", "label", "freq_target", "freq_other", "other", "diff", "adj_diff",
           "ratio", "log_odds", "n_target", "n_other", "docs_target", "docs_other", "both", "only_target",
           "only_other", "p_value", "q_value", "test", "control", "ubiquitous", "mean_tokens_target",
           "median_tokens_target", "mean_tokens_other", "median_tokens_other", "examples_target", "examples_other"]
TESTS = {"none": "z", "length": "logistic", "length-cmh": "cmh"}  # the test of each unpaired control
# stored strata (a quarter octave) merged into one cell of the logistic regression: its covariate is the
# cell's mean log length, so wide cells lose nothing, and 4x fewer cells make the fit 4x cheaper
LOGISTIC_MERGE = 4


def feature_counts(store: Store, info: CorpusInfo, threshold: float = 0.0) -> np.ndarray:
    """Documents of one corpus in which each latent is present, as a dense [d_sae] array: from the
    corpus' latent statistics at threshold 0 (no scan), else one SQL aggregate."""
    if threshold == 0:
        return present_counts(corpus_stats(store, info, ["n_present"]), int(info.d_sae))
    df = run_query(store, "feature_doc_counts", {"lo": info.lo, "hi": info.hi, "threshold": float(threshold)})
    out = np.zeros(int(info.d_sae), dtype=np.int64)
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
    ubiquitous: bool  # report near-ubiquitous latents too


@dataclass
class _Tested:
    """Every tested latent of one target against the corpus it is compared with, as arrays over latents.

    ``adj`` is the difference the rows are ranked and filtered by: the length-adjusted one under
    length control, else the plain frequency difference. ``paired`` holds (both, only target, only
    other) pair counts in paired mode.
    """

    fids: np.ndarray
    other: np.ndarray
    kt: np.ndarray
    ko: np.ndarray
    nt: np.ndarray
    no: np.ndarray
    log_odds: np.ndarray
    p: np.ndarray
    adj: np.ndarray
    ubiquitous: np.ndarray
    test: str
    paired: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def subset(self, keep: np.ndarray) -> _Tested:
        arrays = {k: (v[keep] if isinstance(v, np.ndarray) else v) for k, v in vars(self).items()}
        if self.paired is not None:
            arrays["paired"] = tuple(x[keep] for x in self.paired)
        return _Tested(**arrays)


def _frame(target: str, t: _Tested, cut: _Cut, control: str, lengths: dict[str, CorpusLengths]) -> pl.DataFrame:
    """The reported rows of one target, best first: BH q-values over every tested latent, then the
    ``diff``/``fdr`` filters (on the adjusted difference under length control), near-ubiquitous
    latents left out, and the ``top`` cut — in numpy, so only the reported rows (≤ ``top``, not all
    d_sae tested latents) become a frame."""
    ft, fo = t.kt / t.nt, t.ko / t.no
    q = bh_qvalues(t.p)
    keep = t.adj >= cut.min_diff
    if not cut.ubiquitous:
        keep &= ~t.ubiquitous
    if cut.fdr is not None:
        keep &= q <= cut.fdr
    idx = np.flatnonzero(keep)
    idx = idx[np.lexsort((t.fids[idx], t.p[idx], -t.adj[idx]))]  # difference desc, then p asc, then feature id
    if cut.top is not None:
        idx = idx[:cut.top]
    ratio = ((t.kt + 0.5) / (t.nt + 1)) / ((t.ko + 0.5) / (t.no + 1))
    other = list(t.other[idx])
    n = len(idx)
    pairs = [pl.Series(name, x[idx].astype(np.int64) if t.paired is not None else [None] * n, pl.Int64)
             for name, x in zip(("both", "only_target", "only_other"), t.paired or (None, None, None))]

    def tokens(names: list[str], what: str) -> pl.Series:
        return pl.Series([getattr(lengths[c], what) for c in names], dtype=pl.Float64)

    return pl.DataFrame({
        "target": pl.Series([target] * n, dtype=pl.String),
        "rank": np.arange(1, n + 1, dtype=np.int32),
        "feature_id": t.fids[idx].astype(np.int32), "freq_target": ft[idx].astype(np.float64),
        "freq_other": fo[idx].astype(np.float64), "other": pl.Series(other, dtype=pl.String),
        "diff": (ft - fo)[idx].astype(np.float64), "adj_diff": t.adj[idx].astype(np.float64),
        "ratio": ratio[idx].astype(np.float64),
        "log_odds": t.log_odds[idx].astype(np.float64), "n_target": t.kt[idx].astype(np.int64),
        "n_other": t.ko[idx].astype(np.int64), "docs_target": t.nt[idx].astype(np.int64),
        "docs_other": t.no[idx].astype(np.int64), **{s.name: s for s in pairs},
        "p_value": t.p[idx].astype(np.float64), "q_value": q[idx].astype(np.float64),
        "test": pl.Series([t.test] * n, dtype=pl.String), "control": pl.Series([control] * n, dtype=pl.String),
        "ubiquitous": t.ubiquitous[idx].astype(bool),
        "mean_tokens_target": tokens([target] * n, "mean_tokens"),
        "median_tokens_target": tokens([target] * n, "median_tokens"),
        "mean_tokens_other": tokens(other, "mean_tokens"), "median_tokens_other": tokens(other, "median_tokens"),
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
    maximum (column ``other``). Rows need ``adj_diff >= min_diff`` and, when ``fdr`` is set,
    ``q_value <= fdr``; at most ``top`` rows per target. ``min_support`` (documents having the
    latent, both sides together) removes latents before the BH correction. Latents present in at
    least 95 % of the documents of every compared corpus (``ubiquitous``) say nothing about any of
    them and are left out unless ``keep_ubiquitous``.

    ``control="length"`` (default) compares documents of equal content-token length: per latent, a
    logistic regression of presence on log length and the corpus, fitted from the length strata kept
    at ingest (:mod:`saeembed.store.strata`); its score test gives the p-value and ``adj_diff``, the
    standardised length-adjusted difference, ranks the rows; the other corpus is the one with the
    highest frequency at equal length. ``control="length-cmh"`` is a Cochran–Mantel–Haenszel test over
    the strata with the Mantel–Haenszel adjusted difference (no model of how presence grows with
    length; evidence only where the corpora's lengths overlap). ``control="none"`` is the plain
    two-proportion test of the frequencies (``adj_diff`` = ``diff``). See
    :mod:`saeembed.analysis.length`.

    ``paired``: exactly two corpora of matched documents, paired by row (row i of A answers the same
    prompt as row i of B; corpora of different sizes are refused) or by the meta field ``pair_key``;
    frequencies are over the pairs; the test is McNemar's (``control="none"``) or, under length control,
    a conditional logistic regression on the pair's log length ratio. Columns: target, rank,
    feature_id, label, freq_target, freq_other, other, diff, adj_diff, ratio (smoothed freq ratio),
    log_odds, n_target / n_other (documents with the latent), docs_target / docs_other (documents
    compared), both / only_target / only_other (paired: pairs with the latent on both sides, on one),
    p_value, q_value, test, control, ubiquitous, mean_tokens_* / median_tokens_* (content tokens per
    document of each side), examples_target / examples_other (doc ids where the latent fires most
    strongly on each side).

    Paper settings: ``control="none"``, ``fdr=None`` (no test), ``min_diff=0.03``, ``top=200``,
    ``threshold=0``.
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
    if o.control not in CONTROLS:
        raise UserError(f"unknown --control {o.control!r}; use {' or '.join(CONTROLS)}")
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
    support = max(int(o.min_support), 1)  # a latent absent on both sides cannot be tested
    cut = _Cut(o.min_diff, o.fdr, o.top, o.keep_ubiquitous)
    lengths = {c: corpus_lengths(st, infos[c]) for c in corpora}
    counts = {c: feature_counts(st, infos[c], threshold) for c in corpora}
    ns = {c: int(infos[c]["n_docs"]) for c in corpora}
    # present in at least this share of the documents of every compared corpus
    ubiquitous = np.all([counts[c] >= UBIQUITOUS * ns[c] for c in corpora], axis=0)

    if o.paired:
        if len(corpora) != 2:
            raise UserError("--paired compares exactly two corpora of matched documents")
        tested = _paired(st, infos, corpora, targets, o.pair_key, threshold, o.control, ubiquitous)
    else:
        tested = _unpaired(st, infos, corpora, targets, threshold, o.control, counts, lengths, ubiquitous)
    parts = []
    for t, x in tested:
        keep = x.kt + x.ko >= support
        parts.append(_frame(t, x.subset(keep), cut, o.control, lengths))
    return _finish(st, pl.concat(parts), infos, sae, o.examples)


def _unpaired(st: Store, infos: dict[str, CorpusInfo], corpora: list[str], targets: list[str], threshold: float,
              control: str, counts: dict[str, np.ndarray], lengths: dict[str, CorpusLengths],
              ubiquitous: np.ndarray) -> list[tuple[str, _Tested]]:
    """Each target against, per latent, the other corpus where the latent is most frequent (at equal
    length under length control)."""
    d_sae = len(ubiquitous)
    fids = np.arange(d_sae, dtype=np.int32)
    ns = {c: int(infos[c]["n_docs"]) for c in corpora}
    merge = LOGISTIC_MERGE if control == "length" else 1
    strata = _shared_strata(st, infos, corpora, threshold, lengths, merge) if control != "none" else None
    done: dict[tuple[str, str], Adjusted] = {}  # each pair of corpora is tested once, seen from both sides
    out = []
    for t in targets:
        others = [c for c in corpora if c != t]
        if strata is None:
            freqs = np.stack([counts[c] / ns[c] for c in others])
            which = freqs.argmax(axis=0)  # the other corpus where the latent is most frequent
            kt, nt = counts[t], np.full(d_sae, float(ns[t]))
            ko = np.stack([counts[c] for c in others])[which, fids]
            no = np.array([ns[c] for c in others], dtype=np.float64)[which]
            _, p = two_proportion_test(kt, nt, ko, no)
            adj, test = kt / nt - ko / no, "z"
        else:
            tests = [_compare(strata, t, o, control, done) for o in others]
            which = np.stack([r.diff for r in tests]).argmin(axis=0)  # the most frequent at equal length
            kt, nt = counts[t], np.full(d_sae, float(ns[t]))
            ko = np.stack([counts[c] for c in others])[which, fids]
            no = np.array([ns[c] for c in others], dtype=np.float64)[which]
            p = np.stack([r.p for r in tests])[which, fids]
            adj, test = np.stack([r.diff for r in tests])[which, fids], TESTS[control]
        lor = np.log((kt + 0.5) * (no - ko + 0.5) / ((nt - kt + 0.5) * (ko + 0.5)))
        other = np.array(others, dtype=object)[which]
        out.append((t, _Tested(fids, other, kt, ko, nt, no, lor, p, adj, ubiquitous, test)))
    return out


def _compare(strata: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], t: str, o: str, control: str,
             done: dict[tuple[str, str], Adjusted]) -> Adjusted:
    """Target ``t`` against ``o`` at equal length (from ``done`` when ``o`` against ``t`` ran already)."""
    if (o, t) in done:
        return done[(o, t)].mirrored()
    if control == "length-cmh":
        res = mantel_haenszel(strata[t][0], strata[t][1], strata[o][0], strata[o][1])
    else:
        res = logistic_length(*strata[t], *strata[o])
    done[(t, o)] = res
    return res


def _shared_strata(st: Store, infos: dict[str, CorpusInfo], corpora: list[str], threshold: float,
                   lengths: dict[str, CorpusLengths], merge: int = 1
                   ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per corpus: ([cells, d_sae] documents with each latent present, [cells] documents, [cells] mean
    log content tokens) on the range of strata the compared corpora occupy, ``merge`` neighbouring
    strata to a cell. At threshold 0 from the strata kept at ingest, else one scan."""
    d_sae = int(next(iter(infos.values()))["d_sae"])
    occupied = np.concatenate([lengths[c].strata for c in corpora]).astype(np.int64)
    first = int(occupied.min()) // merge * merge
    n_cells = int(occupied.max()) // merge - first // merge + 1
    out = {}
    for c in corpora:
        kept = lengths[c]
        if threshold != 0:
            kept = replace(kept, latents=latent_counts(st.con, int(infos[c].corpus_id), threshold))
        present = kept.present(d_sae, first, n_cells * merge)
        docs, mean_log = kept.on(first, n_cells * merge)
        if merge > 1:
            present = present.reshape(n_cells, merge, d_sae).sum(axis=1)
            total_log = (docs * mean_log).reshape(n_cells, merge).sum(axis=1)
            docs = docs.reshape(n_cells, merge).sum(axis=1)
            mean_log = total_log / np.maximum(docs, 1)
        out[c] = (present, docs, mean_log)
    return out


def _paired(st: Store, infos: dict[str, CorpusInfo], corpora: list[str], targets: list[str], pair_key: str | None,
            threshold: float, control: str, ubiquitous: np.ndarray) -> list[tuple[str, _Tested]]:
    a, b = corpora
    ia, ib = infos[a], infos[b]
    rows_a, rows_b = paired_rows(st, ia, ib, pair_key)
    fids = np.arange(len(ubiquitous), dtype=np.int32)
    ratio = _pair_strata(st, ia, ib, rows_a, rows_b) if control != "none" else None
    df = run_query(st, "paired_discordance", {"a_lo": ia["lo"], "a_hi": ia["hi"], "b_lo": ib["lo"], "b_hi": ib["hi"],
                                              "rows_a": rows_a.tolist(), "rows_b": rows_b.tolist(),
                                              "strata": (ratio[0] if ratio else np.zeros(len(rows_a), int)).tolist(),
                                              "threshold": threshold})
    strata = np.unique(ratio[0]) if ratio else np.zeros(1, np.int64)
    cells = {k: np.zeros((len(strata), len(fids)), np.int64) for k in ("only_a", "only_b", "both")}
    row = np.searchsorted(strata, df["stratum"].to_numpy())
    for k, arr in cells.items():
        arr[row, df["feature_id"].to_numpy().astype(np.int64)] = df[k].to_numpy()
    counts = {k: v.sum(axis=0) for k, v in cells.items()}
    n_pairs = len(rows_a)
    n = np.full(len(fids), float(n_pairs))
    out = []
    for t, o, ct, co in ((a, b, "only_a", "only_b"), (b, a, "only_b", "only_a")):
        if t not in targets:
            continue
        ot, oo, both = counts[ct], counts[co], counts["both"]
        kt, ko = ot + both, oo + both
        if ratio is None:
            p, adj, test = mcnemar_test(ot, oo), (ot - oo) / n_pairs, "mcnemar"
        else:
            res = paired_length(cells[ct], cells[co], _stratum_means(ratio, strata, t == a), n_pairs)
            p, adj, test = res.p, res.diff, "paired-logistic"
        lor = np.log((ot + 0.5) / (oo + 0.5))  # conditional (discordant-pair) odds ratio
        other = np.array([o] * len(fids), dtype=object)
        out.append((t, _Tested(fids, other, kt, ko, n, n, lor, p, adj, ubiquitous, test, (both, ot, oo))))
    return out


def _pair_strata(st: Store, ia: CorpusInfo, ib: CorpusInfo, rows_a: np.ndarray, rows_b: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(stratum, log length ratio A/B) of every pair: strata of the ratio, a quarter octave wide."""
    def tokens(info: CorpusInfo, rows: np.ndarray) -> np.ndarray:
        df = st.con.execute("SELECT row_idx, n_tokens FROM documents WHERE corpus_id = ?",
                            [info.corpus_id]).fetchnumpy()
        by_row = np.zeros(int(df["row_idx"].max()) + 1, np.float64)
        by_row[df["row_idx"]] = np.maximum(df["n_tokens"], 1)
        return by_row[rows]

    delta = np.log(tokens(ia, rows_a)) - np.log(tokens(ib, rows_b))
    return np.floor(BINS_PER_OCTAVE * delta / np.log(2)).astype(np.int64), delta


def _stratum_means(ratio: tuple[np.ndarray, np.ndarray], strata: np.ndarray, a_is_target: bool) -> np.ndarray:
    """Mean log length ratio (target over other) of the pairs in each stratum."""
    stratum, delta = ratio
    at = np.searchsorted(strata, stratum)
    means = np.bincount(at, delta, len(strata)) / np.maximum(np.bincount(at, minlength=len(strata)), 1)
    return means if a_is_target else -means


__all__ = ["diff", "feature_counts", "two_proportion_test", "mcnemar_test", "PAPER_MIN_DIFF", "PAPER_TOP",
           "UBIQUITOUS"]
