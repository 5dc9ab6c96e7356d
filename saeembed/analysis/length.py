"""Comparing latent presence between corpora at equal document length, from counts alone.

Why: presence is max-pooled, so a longer document has more latents present; two corpora whose
documents differ in length differ in almost every latent's frequency, and a plain two-proportion
test calls most latents "more frequent" in the longer corpus. Every function here takes per-stratum
counts (documents of each corpus per content-token length stratum, and per latent the documents of
each stratum where it is present), never documents, so diff's cost does not grow with the corpora.

- :func:`mantel_haenszel`: the Cochran–Mantel–Haenszel test over length strata, and the
  Mantel–Haenszel pooled risk difference. Nonparametric in length: only strata that both corpora
  occupy carry information, so it never extrapolates, and loses power where lengths barely overlap.
- :func:`logistic_length`: a logistic regression of presence on log length plus a corpus term, per
  latent (grouped over the strata, vectorised over latents): a score test of the corpus term and the
  standardised (marginal) difference. Parametric in length: it uses every stratum, so it keeps power
  where the lengths overlap little, and it assumes the log odds of presence are linear in log length.
- :func:`paired_length`: matched pairs, conditional logistic regression of "which side of a
  discordant pair has the latent" on the pair's log length ratio: the corpus term is the log odds at
  equal length.

All three return signed z statistics (positive: more frequent in the first corpus), two-sided
p-values and an adjusted frequency difference, arrays over latents.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RIDGE = 1e-4  # keeps Newton steps finite for latents whose presence separates by length
TOLERANCE = 1e-4  # Newton stops when no (non-separated) coefficient moves more than this


@dataclass(frozen=True)
class Adjusted:
    """Per latent: signed z (positive = more frequent in the first corpus at equal length), two-sided
    p-value, and the length-adjusted frequency difference (first minus second)."""

    z: np.ndarray
    p: np.ndarray
    diff: np.ndarray

    def mirrored(self) -> Adjusted:
        """The same comparison seen from the other corpus."""
        return Adjusted(-self.z, self.p, -self.diff)


def _two_sided(z: np.ndarray) -> np.ndarray:
    from scipy.special import ndtr

    return 2 * ndtr(-np.abs(z))


def _signed(stat: np.ndarray, var: np.ndarray, correction: float = 0.0) -> np.ndarray:
    """stat / sqrt(var) with a continuity correction; 0 where there is no variance (no evidence)."""
    ok = var > 0
    mag = np.maximum(np.abs(stat) - correction, 0.0)
    return np.where(ok, np.sign(stat) * mag / np.sqrt(np.where(ok, var, 1.0)), 0.0)


def mantel_haenszel(ka: np.ndarray, na: np.ndarray, kb: np.ndarray, nb: np.ndarray) -> Adjusted:
    """CMH test (continuity-corrected) and MH risk difference of A vs B over strata.

    ``ka``, ``kb``: [strata, latents] documents with the latent present; ``na``, ``nb``: [strata]
    documents. Strata that only one corpus occupies drop out; a latent without any shared stratum
    gets z = 0, p = 1, diff = 0. One pass per shared stratum over contiguous rows of latents: a
    65,536-latent diff costs a few milliseconds, whatever the corpus sizes.
    """
    n_latents = ka.shape[1]
    dev, var, num = np.zeros(n_latents), np.zeros(n_latents), np.zeros(n_latents)
    weight = 0.0
    for s in np.flatnonzero((np.asarray(na) > 0) & (np.asarray(nb) > 0)):
        a, b = np.asarray(ka[s], np.float64), np.asarray(kb[s], np.float64)
        n_a, n_b = float(na[s]), float(nb[s])
        t = n_a + n_b
        m1 = a + b
        dev += a - m1 * (n_a / t)  # observed minus expected under no difference at this length
        if t > 1:  # hypergeometric variance m1 (t - m1) na nb / (t^2 (t - 1))
            var += m1 * (t - m1) * (n_a * n_b / (t * t * (t - 1)))
        num += a * (n_b / t) - b * (n_a / t)
        weight += n_a * n_b / t
    z = _signed(dev, var, 0.5)
    diff = num / weight if weight > 0 else num
    return Adjusted(z, np.where(var > 0, _two_sided(z), 1.0), diff)


def _dot(c: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``c @ m`` for a [cells] vector and a [cells, latents] matrix, without BLAS: its threads spin on a
    busy machine, and einsum over so few cells is 30x cheaper."""
    return np.einsum("c,cf->f", c, m)


def _trials(n: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Trials per cell as [cells, latents] (a [cells] vector is the same for every latent)."""
    return np.broadcast_to(np.asarray(n, np.float64).reshape(len(k), -1), k.shape)


def _solve(info: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """``info[:, :, f]^-1 rhs[:, f]`` for every latent f: symmetric 1x1, 2x2 or 3x3 systems by their
    closed forms (65,536 LAPACK calls on 3x3 matrices cost more than the whole fit)."""
    if len(info) == 1:
        return rhs / info[0]
    if len(info) == 2:
        (a, b), (_, d) = info
        det = a * d - b * b
        return np.stack([d * rhs[0] - b * rhs[1], a * rhs[1] - b * rhs[0]]) / det
    (a, b, c), (_, d, e), (_, _, f) = info
    co = np.stack([d * f - e * e, c * e - b * f, b * e - c * d, a * f - c * c, b * c - a * e, a * d - b * b])
    det = a * co[0] + b * co[1] + c * co[2]
    inv = [[co[0], co[1], co[2]], [co[1], co[3], co[4]], [co[2], co[4], co[5]]]
    return np.stack([sum(inv[i][j] * rhs[j] for j in range(3)) for i in range(3)]) / det


def _start(k: np.ndarray, n: np.ndarray, cols: list[np.ndarray]) -> np.ndarray:
    """Starting coefficients: 0, and the latent's overall rate for an intercept in ``cols[0]`` (measured
    faster to converge than a weighted least squares start on the cells' empirical logits, which
    sparse latents throw far off)."""
    beta = np.zeros((len(cols), k.shape[1]))
    if np.all(cols[0] == 1):
        rate = (k.sum(axis=0) + 0.5) / (n.sum(axis=0) + 1.0)
        beta[0] = np.log(rate / (1 - rate))
    return beta


def _fit(k: np.ndarray, n: np.ndarray, cols: list[np.ndarray], beta: np.ndarray | None = None,
         iters: int = 25, tolerance: float = TOLERANCE) -> tuple[np.ndarray, np.ndarray]:
    """Grouped logistic regression per latent: ``k`` [cells, latents] successes of ``n`` [cells] (or
    [cells, latents]) trials, ``logit p = sum_p beta_p · cols[p]`` with ``cols`` [cells] covariates,
    from ``beta`` [P, latents] (default: :func:`_start`).

    Returns the coefficients [P, latents] and the information matrix [P, P, latents] at the fit.
    Newton–Raphson for every latent at once, each step only over the latents still moving (after
    two steps, a few percent of them); a small ridge keeps latents whose presence separates by
    length finite (their tests have no power either way), and they do not hold up the others.
    """
    from scipy.special import expit

    n_par = len(cols)
    n = _trials(n, k)
    beta = (_start(k, n, cols) if beta is None else beta).copy()
    info = np.zeros((n_par, n_par, k.shape[1]))
    active = np.arange(k.shape[1])
    # the steps run in float32 (half the memory traffic; the caller's test is computed in float64 at
    # the fit), the coefficients and the 3x3 solves in float64
    k32, n32 = k.astype(np.float32), n.astype(np.float32)
    c32 = [c.astype(np.float32) for c in cols]
    ks, ns = k32, n32
    for _ in range(iters):  # Newton converges quadratically: 3-5 steps from a good start
        b = beta[:, active]
        pr = expit(sum(c[:, None] * x.astype(np.float32)[None, :] for c, x in zip(c32, b)))
        w = ns * pr * (1 - pr)
        r = ks - ns * pr
        grad = np.stack([_dot(c, r) for c in c32]).astype(np.float64) - RIDGE * b
        step_info = np.empty((n_par, n_par, len(active)))
        for p in range(n_par):
            for q in range(p, n_par):
                step_info[p, q] = step_info[q, p] = _dot(c32[p] * c32[q], w) + (RIDGE if p == q else 0.0)
        step = _solve(step_info, grad)
        beta[:, active] = b + step
        info[:, :, active] = step_info
        moving = (np.abs(step).max(axis=0) > tolerance) & (np.abs(b + step).max(axis=0) < 20)
        if not moving.any():
            break
        active = active[moving]
        ks, ns = k32[:, active], n32[:, active]
    return beta, info


def _score_test(k: np.ndarray, n: np.ndarray, cols: list[np.ndarray], tested: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Signed z and variance of the score test of adding covariate ``tested`` [cells] to the model
    fitted on ``cols``: the score at the fit without it over its standard error (information with the
    fitted coefficients profiled out); and that fit's coefficients. float32 cells (a count of 10^6
    documents is exact, a residual off by 1e-7 of it), float64 sums and solves."""
    from scipy.special import expit

    beta, info = _fit(k, n, cols)
    c32 = [c.astype(np.float32) for c in cols]
    pr = expit(sum(c[:, None] * b.astype(np.float32)[None, :] for c, b in zip(c32, beta)))
    n = _trials(n, k).astype(np.float32)
    w = n * pr * (1 - pr)
    t32 = tested.astype(np.float32)
    score = _dot(t32, k.astype(np.float32) - n * pr).astype(np.float64)
    cross = np.stack([_dot(t32 * c, w) for c in c32]).astype(np.float64)  # [P, latents]
    var = _dot(t32 * t32, w).astype(np.float64) - (cross * _solve(info, cross)).sum(axis=0)
    return _signed(score, var), var, beta


def presence_curves(k: np.ndarray, n: np.ndarray, mean_log: np.ndarray) -> np.ndarray:
    """[cells, latents] probability that each latent is present in a document of each length cell, from a
    logistic regression of presence on log length per latent (the length model of :func:`logistic_length`
    without the corpus term). ``k`` [cells, latents] documents with the latent present of ``n`` [cells],
    ``mean_log`` [cells] their mean log content tokens; every cell must hold a document."""
    from scipy.special import expit

    n = np.asarray(n, np.float64)
    lx = np.asarray(mean_log, np.float64)
    lx = lx - (lx * n).sum() / max(n.sum(), 1.0)
    beta, _ = _fit(np.asarray(k, np.float64), n, [np.ones_like(lx), lx])
    return expit(beta[0][None, :] + lx[:, None] * beta[1][None, :])


def logistic_length(ka: np.ndarray, na: np.ndarray, xa: np.ndarray, kb: np.ndarray, nb: np.ndarray,
                    xb: np.ndarray) -> Adjusted:
    """Score test of the corpus term in ``logit P(present) = a + g·log length + b·[corpus A]`` and the
    standardised difference (every document of both corpora predicted as A minus as B).

    ``ka``, ``kb``: [cells, latents] as for :func:`mantel_haenszel`; ``xa``, ``xb``: [cells] mean log
    content tokens of each corpus' documents in the cell (its covariate); empty cells are dropped.
    Cells may be wide (an octave): the covariate is the cell's mean log length, not its bounds.
    """
    from scipy.special import expit

    keep_a, keep_b = na > 0, nb > 0
    k = np.concatenate([ka[keep_a], kb[keep_b]], axis=0).astype(np.float64)
    n = np.concatenate([na[keep_a], nb[keep_b]]).astype(np.float64)
    lx = np.concatenate([xa[keep_a], xb[keep_b]]).astype(np.float64)
    lx = lx - (lx * n).sum() / n.sum()
    is_a = np.concatenate([np.ones(keep_a.sum()), np.zeros(keep_b.sum())])
    one = np.ones_like(lx)
    z, var, null = _score_test(k, n, [one, lx], is_a)
    # the fit with the corpus term starts from the fit without it; the difference ranks and filters
    # the rows (the test above decides them), so the steps stop once no coefficient moves 0.01:
    # measured at 10^6 documents, the difference is then within 0.002 of the converged fit
    beta, _ = _fit(k, n, [one, lx, is_a], np.vstack([null, np.zeros(k.shape[1])]), iters=4, tolerance=1e-2)
    beta = beta.astype(np.float32)
    eta = beta[0][None, :] + lx.astype(np.float32)[:, None] * beta[1][None, :]
    share = (n / n.sum()).astype(np.float32)
    diff = _dot(share, expit(eta + beta[2][None, :]) - expit(eta)).astype(np.float64)
    return Adjusted(z, np.where(var > 0, _two_sided(z), 1.0), diff)


def paired_length(only_a: np.ndarray, only_b: np.ndarray, delta: np.ndarray, n_pairs: int) -> Adjusted:
    """Matched pairs: ``logit P(A has it | discordant) = b + g·delta`` per latent, grouped over strata
    of the pairs' log length ratio ``delta`` = log(tokens A / tokens B) ([strata], the mean over the
    stratum's pairs); ``only_a``, ``only_b``: [strata, latents] discordant pairs. Score test of b = 0
    (no corpus effect at equal length, g free) and the adjusted difference: the discordant share
    times 2·expit(b) − 1, the imbalance the pairs would show at equal length.
    """
    from scipy.special import expit

    k = only_a.astype(np.float64)
    n = (only_a + only_b).astype(np.float64)
    delta = np.asarray(delta, np.float64)
    # the null model has no intercept (pairs of equal length are 50/50): the slope is its only column
    z, var, _ = _score_test(k, n, [delta], np.ones_like(delta))
    beta, _ = _fit(k, n, [np.ones_like(delta), delta])
    diff = n.sum(axis=0) / n_pairs * (2 * expit(beta[0]) - 1)
    return Adjusted(z, np.where(var > 0, _two_sided(z), 1.0), diff)


__all__ = ["Adjusted", "mantel_haenszel", "logistic_length", "paired_length", "presence_curves"]
