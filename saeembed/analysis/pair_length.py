"""Co-occurrence at equal document length: what correlate holds a pair's joint count against.

Why: presence is max-pooled, so a long document has more latents present. In a corpus whose documents
differ in length, any two latents that are both commoner in long documents are present together more
often than their overall frequencies predict, and plain NPMI calls them associated. On 800 GoEmotions
comments (2 to 51 content tokens), shuffling every latent's presence among documents of the same length
(which destroys every real association and keeps only length) left a plain co-occurrence test 29,763
"significant" pairs of 2 million (q < 0.05); on 800 Amazon reviews (5 to 203 tokens) 1,161,982. Against
either expectation below: none on either (``python -m saeembed.evaluate --only correlation``).

Two expectations, both of the documents with a and b under "a and b are independent among documents of
the same length" (the two controls of diff, the same names):

- ``length`` (default): each latent's presence is a logistic curve in log content tokens, fitted per
  latent over the quarter-octave strata diff uses (:func:`~.length.presence_curves`), and
  E = Σ_d p_a(len_d) · p_b(len_d), summed stratum by stratum. Parametric in length: it borrows strength
  across strata, so an association that itself makes documents longer (a sentence appended to some of
  them) keeps most of its signal, where stratification absorbs it (measured: a phrase planted in 16 of
  800 comments pairs with its latent at NPMI 0.383 this way, 0.165 stratified, 0.484 plain).
- ``length-cmh``: the strata themselves, E = Σ_s a_s · b_s / n_s (a_s, b_s: documents of stratum s with
  a, with b; n_s: its documents). Nonparametric: it assumes nothing about how presence grows with length.

Both are written as per-cell counts of documents with each latent (observed for ``length-cmh``, fitted
n_s · p(s) for ``length``), from which

    E = Σ_c a_c · b_c / n_c,    V = Σ_c a_c (n_c − a_c) b_c (n_c − b_c) / (n_c² (n_c − 1))

(the hypergeometric variance for observed counts; for fitted ones, the variance of Σ_d (A_d − p_a)(B_d − p_b)
up to n_c / (n_c − 1)). In cross mode a cell is a pair of documents' two strata, each side's latents
fitted on its own documents' lengths. From E and V:

- **NPMI at equal length** = log(p_ab / (E / n)) / −log p_ab: NPMI with the product of the two frequencies
  replaced by the length-conditional expectation. With one cell it is the paper's NPMI (E = n_a n_b / n).
- **p-value**: one-sided, co-occurrence beyond chance at equal length. Not the normal tail
  z = (n_ab − E − ½) / √V (:func:`normal_p_values`): for rare latents it is off by dozens of orders of
  magnitude (5 and 5 of 800 documents, 3 together: 1e-45 where Fisher's exact test gives 1e-6), and for
  near-ubiquitous ones too. Each cell's count is written as a binomial that matches its hypergeometric
  in mean and range, and the cells are summed by saddlepoint (:meth:`LengthCells.p_values`): within a
  few-fold of the exact test down to 1e-15 (the tests check it against Fisher's test and against exact
  convolutions of the strata), erring large.

Cells with a single document carry no variance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAIR_CHUNK = 65536  # pairs whose expectation is gathered at once: memory cells × chunk


@dataclass(frozen=True)
class LengthCells:
    """Per length cell: documents (``docs`` [cells]) and, per latent, documents with it present
    (``present_a`` [cells, latents of a], ``present_b`` the same for the other side; the same array within
    one corpus)."""

    docs: np.ndarray
    present_a: np.ndarray
    present_b: np.ndarray

    @classmethod
    def of_rows(cls, cells: np.ndarray, xa, xb=None) -> LengthCells:
        """Cells of the binary CSR matrices' rows (``cells`` [rows]: any integer label per row)."""
        from scipy import sparse

        _, at = np.unique(np.asarray(cells), return_inverse=True)
        n_cells, n_rows = int(at.max(initial=-1)) + 1, len(at)
        member = sparse.csr_matrix((np.ones(n_rows), (at, np.arange(n_rows))), shape=(n_cells, n_rows))
        count = lambda x: np.asarray((member @ x.astype(np.float64)).todense())  # noqa: E731
        pa = count(xa)
        return cls(np.bincount(at, minlength=n_cells).astype(np.float64), pa, pa if xb is None else count(xb))

    @classmethod
    def fitted(cls, strata_a: np.ndarray, log_a: np.ndarray, xa, strata_b: np.ndarray | None = None,
               log_b: np.ndarray | None = None, xb=None) -> LengthCells:
        """Cells of the rows' strata (cross mode: pairs of the two sides' strata) with each latent's
        documents fitted by its logistic presence curve in log length (``log_a`` [rows]: log content
        tokens of side a's documents; ``strata_b``, ``log_b``, ``xb`` the same for side b, if any)."""
        def curves(strata: np.ndarray, log_len: np.ndarray, x) -> tuple[LengthCells, np.ndarray]:
            own = cls.of_rows(strata, x)
            _, at = np.unique(strata, return_inverse=True)
            mean_log = np.bincount(at, np.asarray(log_len, np.float64)) / own.docs
            return cls.from_counts(own.docs, own.present_a, mean_log), at

        own_a, at_a = curves(strata_a, log_a, xa)
        if xb is None:
            return own_a
        own_b, at_b = curves(strata_b, log_b, xb)
        width = int(at_b.max(initial=0)) + 1
        pairs, at = np.unique(at_a.astype(np.int64) * width + at_b, return_inverse=True)
        docs = np.bincount(at, minlength=len(pairs)).astype(np.float64)
        pa, pb = own_a.present_a / own_a.docs[:, None], own_b.present_a / own_b.docs[:, None]
        return cls(docs, docs[:, None] * pa[pairs // width], docs[:, None] * pb[pairs % width])

    @classmethod
    def from_counts(cls, docs: np.ndarray, present: np.ndarray, mean_log: np.ndarray) -> LengthCells:
        """Cells of one corpus with each latent's documents fitted by its logistic presence curve in log
        length (:func:`~.length.presence_curves`), from per-cell counts: ``docs`` [cells] (each holding a
        document), ``present`` [cells, latents] documents with each latent, ``mean_log`` [cells] their
        mean log content tokens (what the length strata kept at ingest hold, too)."""
        from .length import presence_curves

        docs = np.asarray(docs, np.float64)
        fitted = docs[:, None] * presence_curves(present, docs, mean_log)
        return cls(docs, fitted, fitted)

    @classmethod
    def single(cls, xa, xb=None) -> LengthCells:
        """One cell holding every document: the plain expectation n_a n_b / n (no length control)."""
        return cls.of_rows(np.zeros(xa.shape[0], np.int64), xa, xb)

    def expected(self, i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(E, V) of the pairs (column ``i`` of side a, column ``j`` of side b)."""
        i, j = np.asarray(i, np.int64), np.asarray(j, np.int64)
        e, v = np.zeros(len(i)), np.zeros(len(i))
        n = self.docs[:, None]
        many = self.docs > 1  # a cell of one document (or none) has no variance
        spread = np.where(many, 1.0 / np.where(many, self.docs ** 2 * (self.docs - 1), 1.0), 0.0)[:, None]
        for s in range(0, len(i), PAIR_CHUNK):
            a, b = self.present_a[:, i[s:s + PAIR_CHUNK]], self.present_b[:, j[s:s + PAIR_CHUNK]]
            e[s:s + PAIR_CHUNK] = (a * b / np.maximum(n, 1)).sum(axis=0)
            v[s:s + PAIR_CHUNK] = (a * (n - a) * b * (n - b) * spread).sum(axis=0)
        return e, v

    def p_values(self, i: np.ndarray, j: np.ndarray, together: np.ndarray, expected: np.ndarray | None = None,
                 variance: np.ndarray | None = None) -> np.ndarray:
        """One-sided p-values of ``together`` documents with both, under independence at equal length.

        A cell's count is hypergeometric (a_c of its n_c documents with a, b_c with b). Its tail is taken
        from a binomial: the count itself, or through a complement (n_ab = b − #(b without a), and so on),
        whichever draws the fewest documents m — Binomial(m, the other side's share) then has the
        hypergeometric's mean, its largest or smallest value and nearly its skew, which a normal tail
        lacks most for the rare or near-ubiquitous latents. The cells' binomials are summed by saddlepoint
        (:func:`binomial_sum_tail`), the distance from the mean shrunk by the ratio of the two sums'
        standard deviations so that the test has the hypergeometric variance. Checked against Fisher's
        exact test in the tests. ``expected`` and ``variance``: :meth:`expected` of the pairs, where the
        caller has them already.
        """
        i, j = np.asarray(i, np.int64), np.asarray(j, np.int64)
        together = np.asarray(together, np.float64)
        if expected is None or variance is None:
            expected, variance = self.expected(i, j)
        out = normal_p_values(together, expected, variance)  # at or below the mean: p ≥ ½ either way
        above = np.flatnonzero(together - 0.5 > expected)
        i, j, together, variance = i[above], j[above], together[above], np.asarray(variance)[above]
        tail = np.ones(len(above))
        n = self.docs[:, None]
        for s in range(0, len(i), PAIR_CHUNK):
            a, b = self.present_a[:, i[s:s + PAIR_CHUNK]], self.present_b[:, j[s:s + PAIR_CHUNK]]
            size, share, base = _binomial_view(a, b, n)
            mean = (size * share).sum(axis=0)
            wide = (size * share * (1 - share)).sum(axis=0)
            exact = variance[s:s + PAIR_CHUNK]
            scale = np.sqrt(np.where((exact > 0) & (wide > 0), wide / np.where(exact > 0, exact, 1.0), 1.0))
            raw = together[s:s + PAIR_CHUNK] - 0.5 - base.sum(axis=0)
            x = mean + (raw - mean) * scale
            # shrunk past the binomials' largest value (a count at or near its bound): the unshrunk
            # distance, whose tail is the binomial's own, a little larger than the hypergeometric's
            x = np.where(x < size.sum(axis=0) - 0.5, x, raw)
            tail[s:s + PAIR_CHUNK] = np.where(exact > 0, binomial_sum_tail(size, share, x), 1.0)
        out[above] = tail
        return out

    def npmi(self, i: np.ndarray, j: np.ndarray, together: np.ndarray) -> np.ndarray:
        """NPMI at equal length of the pairs (i, j) present together in ``together`` documents."""
        e, _ = self.expected(i, j)
        return npmi_against(together, e, float(self.docs.sum()))


def _binomial_view(a: np.ndarray, b: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(m, q, c) per cell with the hypergeometric count of documents with both ≈ c + Binomial(m, q): of the
    four ways to write it (the count, or a count of documents lacking one or both latents), the one
    drawing the fewest documents, where drawing without replacement differs least from a binomial."""
    na, nb = n - a, n - b
    views = [  # (m, q, c): n_ab ≈ c + Binomial(m, q)
        (np.minimum(a, b), np.maximum(a, b) / np.maximum(n, 1), np.zeros_like(a)),
        (np.minimum(na, b), 1 - np.maximum(na, b) / np.maximum(n, 1), b - np.minimum(na, b)),
        (np.minimum(a, nb), 1 - np.maximum(a, nb) / np.maximum(n, 1), a - np.minimum(a, nb)),
        (np.minimum(na, nb), np.maximum(na, nb) / np.maximum(n, 1), a + b - n),
    ]
    best = np.argmin(np.stack([v[0] for v in views]), axis=0)
    pick = lambda k: np.choose(best, [v[k] for v in views])  # noqa: E731
    return np.maximum(pick(0), 0.0), np.clip(pick(1), 0.0, 1.0), pick(2)


def npmi_against(together: np.ndarray, expected: np.ndarray, n: float) -> np.ndarray:
    """log(p_ab / (E / n)) / −log p_ab; −1 where the pair never co-occurs, 1 where it is in every document."""
    c = np.asarray(together, np.float64)
    pij = c / max(n, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (np.log(pij) - np.log(np.asarray(expected, np.float64) / max(n, 1.0))) / -np.log(pij)
    out = np.clip(np.where(c <= 0, -1.0, out), -1.0, 1.0)  # a fitted expectation can dip below n_ab² / n
    return np.where((c > 0) & (pij >= 1.0), 1.0, out)


def normal_p_values(together: np.ndarray, expected: np.ndarray, variance: np.ndarray) -> np.ndarray:
    """One-sided (more together than expected) normal-approximation p-values, z = (n_ab − E − ½) / √V;
    1 where V = 0. Accurate only where V is large: :meth:`LengthCells.p_values` is what correlate
    reports."""
    from scipy.special import ndtr

    c = np.asarray(together, np.float64)
    ok = variance > 0
    z = np.where(ok, (c - expected - 0.5) / np.sqrt(np.where(ok, variance, 1.0)), -np.inf)
    return ndtr(-z)


def binomial_sum_tail(n: np.ndarray, prob: np.ndarray, x: np.ndarray, iters: int = 40) -> np.ndarray:
    """P(Σ_c X_c ≥ x + ½) for independent X_c ~ Binomial(n_c, prob_c) (``x`` = k − ½ gives P(sum ≥ k)):
    the Lugannani–Rice saddlepoint approximation with Daniels' continuity correction, vectorised over
    columns (``n`` [cells] or [cells, m], real sizes allowed, ``prob`` [cells, m], ``x`` [m]).

    Why not the normal approximation: a pair of rare latents (5 documents each, 3 together, 0.03
    expected) has a variance of 0.03, and z = 14 claims p = 1e-45 where the exact tail is 1e-6; over
    millions of pairs that decides which pairs a q-value calls significant. The saddlepoint tail is
    within a few percent of the exact one far into the tail (the tests check it against exact
    convolutions), for a few Newton steps per pair.
    """
    from scipy.special import expit, ndtr

    prob = np.clip(np.asarray(prob, np.float64), 0.0, 1.0)
    n = np.broadcast_to(np.asarray(n, np.float64).reshape(len(prob), -1), prob.shape)
    x = np.asarray(x, np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_p, log_q = np.log(prob), np.log1p(-prob)
        logit = log_p - log_q
        mean = (n * prob).sum(axis=0)
        var = (n * prob * (1 - prob)).sum(axis=0)
        top = (n * (prob > 0)).sum(axis=0)  # the largest value the sum can take
        lo, hi = np.full(len(x), -60.0), np.full(len(x), 60.0)
        s = np.clip(np.log(np.maximum(x, 1e-3) / np.maximum(mean, 1e-12)), -60.0, 60.0)
        for _ in range(iters):  # Newton on K'(s) = x, kept inside a bracket that bisection narrows
            q = expit(s[None, :] + logit)
            d1 = (n * q).sum(axis=0) - x
            d2 = (n * q * (1 - q)).sum(axis=0)
            lo, hi = np.where(d1 < 0, s, lo), np.where(d1 > 0, s, hi)
            step = s - d1 / np.where(d2 > 0, d2, np.inf)
            s_new = np.where((step > lo) & (step < hi) & (d2 > 0), step, (lo + hi) / 2)
            if np.all(np.abs(s_new - s) < 1e-10):
                s = s_new
                break
            s = s_new
        q = expit(s[None, :] + logit)
        k2 = (n * q * (1 - q)).sum(axis=0)
        cgf = (n * np.logaddexp(log_q, log_p + s[None, :])).sum(axis=0)
        w = np.sign(s) * np.sqrt(np.maximum(2 * (s * x - cgf), 0.0))
        u = 2 * np.sinh(s / 2) * np.sqrt(k2)
        phi = np.exp(-0.5 * w * w) / np.sqrt(2 * np.pi)
        saddle = ndtr(-w) - phi * (1 / w - 1 / u)
        normal = ndtr(-(x - mean) / np.sqrt(np.where(var > 0, var, 1.0)))
    p = np.where(np.abs(w) > 1e-3, saddle, normal)
    p = np.where(var > 0, p, np.where(x < mean, 1.0, 0.0))
    p = np.where(x >= top, 0.0, p)  # k above what the sum can reach (k ≤ top always for observed pairs)
    return np.clip(np.where(np.isfinite(p), p, normal), 0.0, 1.0)


def bh_over(p: np.ndarray, m: int) -> np.ndarray:
    """Benjamini–Hochberg q-values of ``p`` among ``m`` tests, the tests not in ``p`` counted as p = 1.

    Why not :func:`~saeembed.analysis.common.bh_qvalues`: correlate scores only the pairs that pass its
    support and NPMI filters, a small part of all pairs it could have tested; BH over the kept pairs with
    the full count m ranks each p among the kept ones only, which can only raise q (conservative).
    """
    p = np.asarray(p, np.float64)
    if not len(p):
        return p.copy()
    m = max(int(m), len(p))
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, len(p) + 1)
    q = np.empty_like(p)
    q[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    return q


__all__ = ["LengthCells", "npmi_against", "normal_p_values", "binomial_sum_tail", "bh_over"]
