"""Co-occurrence at equal document length: what correlate holds a pair's joint count against.

Why: presence is max-pooled, so a long document has more latents present. In a corpus whose documents
differ in length, any two latents that are both commoner in long documents are present together more
often than their overall frequencies predict, and plain NPMI calls them associated. On 800 GoEmotions
comments (2 to 51 content tokens), shuffling every latent's presence among documents of the same length
(which destroys every real association and keeps only length) left a plain co-occurrence test 56,328
"significant" pairs of 2 million (q < 0.05); on 800 Amazon reviews (5 to 203 tokens) 1,160,779. Against
either expectation below: none on either.

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
- **p-value**: one-sided, z = (n_ab − E − ½) / √V (continuity-corrected): co-occurrence beyond chance, at
  equal length (for ``length-cmh`` the Cochran–Mantel–Haenszel test).

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
        from .length import presence_curves

        def curves(strata: np.ndarray, log_len: np.ndarray, x) -> tuple[np.ndarray, np.ndarray]:
            own = cls.of_rows(strata, x)
            _, at = np.unique(strata, return_inverse=True)
            mean_log = np.bincount(at, np.asarray(log_len, np.float64)) / own.docs
            return presence_curves(own.present_a, own.docs, mean_log), at

        pa, at_a = curves(strata_a, log_a, xa)
        if xb is None:
            docs = np.bincount(at_a, minlength=len(pa)).astype(np.float64)
            present = docs[:, None] * pa
            return cls(docs, present, present)
        pb, at_b = curves(strata_b, log_b, xb)
        pairs, at = np.unique(at_a.astype(np.int64) * (int(at_b.max(initial=0)) + 1) + at_b, return_inverse=True)
        docs = np.bincount(at, minlength=len(pairs)).astype(np.float64)
        side_a, side_b = pairs // (int(at_b.max(initial=0)) + 1), pairs % (int(at_b.max(initial=0)) + 1)
        return cls(docs, docs[:, None] * pa[side_a], docs[:, None] * pb[side_b])

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

    def npmi(self, i: np.ndarray, j: np.ndarray, together: np.ndarray) -> np.ndarray:
        """NPMI at equal length of the pairs (i, j) present together in ``together`` documents."""
        e, _ = self.expected(i, j)
        return npmi_against(together, e, float(self.docs.sum()))


def npmi_against(together: np.ndarray, expected: np.ndarray, n: float) -> np.ndarray:
    """log(p_ab / (E / n)) / −log p_ab; −1 where the pair never co-occurs, 1 where it is in every document."""
    c = np.asarray(together, np.float64)
    pij = c / max(n, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (np.log(pij) - np.log(np.asarray(expected, np.float64) / max(n, 1.0))) / -np.log(pij)
    out = np.where(c <= 0, -1.0, out)
    return np.where((c > 0) & (pij >= 1.0), 1.0, out)


def cmh_p_values(together: np.ndarray, expected: np.ndarray, variance: np.ndarray) -> np.ndarray:
    """One-sided (more together than expected) Cochran–Mantel–Haenszel p-values; 1 where V = 0."""
    from scipy.special import ndtr

    c = np.asarray(together, np.float64)
    ok = variance > 0
    z = np.where(ok, (c - expected - 0.5) / np.sqrt(np.where(ok, variance, 1.0)), -np.inf)
    return ndtr(-z)


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


__all__ = ["LengthCells", "npmi_against", "cmh_p_values", "bh_over"]
