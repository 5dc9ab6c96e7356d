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


def _newton(k: np.ndarray, n: np.ndarray, x: np.ndarray, iters: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Grouped logistic regression per latent: successes ``k`` [F, C] of ``n`` [C] (or [F, C]) trials
    in cells with covariates ``x`` [C, P]. Returns coefficients [F, P] and the information matrix
    [F, P, P] at the fit. Newton–Raphson, every latent at once; a small ridge keeps separated
    latents finite (their coefficients then stop growing, their tests have no power either way)."""
    from scipy.special import expit

    f, p_ = k.shape[0], x.shape[1]
    n = np.broadcast_to(n, k.shape)
    beta = np.zeros((f, p_))
    rate = (k.sum(axis=1) + 0.5) / (n.sum(axis=1) + 1.0)
    beta[:, 0] = np.log(rate / (1 - rate))
    eye = RIDGE * np.eye(p_)
    info = np.broadcast_to(eye, (f, p_, p_)).copy()
    active = np.ones(f, dtype=bool)
    for _ in range(iters):
        idx = np.flatnonzero(active)
        if not len(idx):
            break
        pr = expit(beta[idx] @ x.T)
        w = n[idx] * pr * (1 - pr)
        grad = (k[idx] - n[idx] * pr) @ x - RIDGE * beta[idx]
        hess = np.einsum("fc,cp,cq->fpq", w, x, x) + eye
        step = np.linalg.solve(hess, grad[..., None])[..., 0]
        beta[idx] += step
        info[idx] = hess
        active[idx] = np.abs(step).max(axis=1) > 1e-7
    return beta, info


def logistic_length(ka: np.ndarray, na: np.ndarray, xa: np.ndarray, kb: np.ndarray, nb: np.ndarray,
                    xb: np.ndarray) -> Adjusted:
    """Score test of the corpus term in ``logit P(present) = a + g·log length + b·[corpus A]`` and the
    standardised difference (every document of both corpora predicted as A minus as B).

    ``ka``, ``kb``: [strata, latents] as for :func:`mantel_haenszel`; ``xa``, ``xb``: [strata] mean log
    content tokens of each corpus' documents in the stratum (the cell's covariate); empty cells are
    dropped.
    """
    from scipy.special import expit

    keep_a, keep_b = na > 0, nb > 0
    k = np.concatenate([ka[keep_a], kb[keep_b]], axis=0).T.astype(np.float64)
    n = np.concatenate([na[keep_a], nb[keep_b]]).astype(np.float64)
    lx = np.concatenate([xa[keep_a], xb[keep_b]])
    lx = lx - (lx * n).sum() / n.sum()
    is_a = np.concatenate([np.ones(keep_a.sum()), np.zeros(keep_b.sum())])
    z_cov = np.stack([np.ones_like(lx), lx], axis=1)
    # score test under the null fit (no corpus term)
    beta0, info0 = _newton(k, n, z_cov)
    pr = expit(beta0 @ z_cov.T)
    w = n * pr * (1 - pr)
    score = ((k - n * pr) * is_a).sum(axis=1)
    i_aa = (w * is_a).sum(axis=1)
    i_az = (w * is_a) @ z_cov
    var = i_aa - np.einsum("fp,fp->f", i_az, np.linalg.solve(info0, i_az[..., None])[..., 0])
    z = _signed(score, var)
    # the standardised difference from the fit with the corpus term
    full = np.concatenate([z_cov, is_a[:, None]], axis=1)
    beta1, _ = _newton(k, n, full)
    eta = beta1[:, :2] @ z_cov.T
    share = n / n.sum()
    diff = ((expit(eta + beta1[:, 2:3]) - expit(eta)) * share).sum(axis=1)
    return Adjusted(z, np.where(var > 0, _two_sided(z), 1.0), diff)


def paired_length(only_a: np.ndarray, only_b: np.ndarray, delta: np.ndarray, n_pairs: int) -> Adjusted:
    """Matched pairs: ``logit P(A has it | discordant) = b + g·delta`` per latent, grouped over strata
    of the pairs' log length ratio ``delta`` = log(tokens A / tokens B) ([strata], the mean over the
    stratum's pairs); ``only_a``, ``only_b``: [strata, latents] discordant pairs. Score test of b = 0
    (no corpus effect at equal length, g free) and the adjusted difference: the discordant share
    times 2·expit(b) − 1, the imbalance the pairs would show at equal length.
    """
    from scipy.special import expit

    k = only_a.T.astype(np.float64)
    n = (only_a + only_b).T.astype(np.float64)
    slope = delta[:, None]
    # null model: no intercept, slope only (pairs of equal length are 50/50)
    g0, info0 = _newton_fixed(k, n, delta)
    pr = expit(g0[:, None] * delta[None, :])
    w = n * pr * (1 - pr)
    score = (k - n * pr).sum(axis=1)
    i_bb = w.sum(axis=1)
    i_bg = (w * delta).sum(axis=1)
    var = i_bb - i_bg ** 2 / info0
    z = _signed(score, var)
    beta, _ = _newton(k, n, np.concatenate([np.ones_like(slope), slope], axis=1))
    diff = n.sum(axis=1) / n_pairs * (2 * expit(beta[:, 0]) - 1)
    return Adjusted(z, np.where(var > 0, _two_sided(z), 1.0), diff)


def _newton_fixed(k: np.ndarray, n: np.ndarray, delta: np.ndarray, iters: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """One-coefficient logistic regression through the origin, ``logit p = g·delta``, per latent:
    (g, information)."""
    from scipy.special import expit

    g = np.zeros(len(k))
    info = np.full(len(k), RIDGE)
    for _ in range(iters):
        pr = expit(g[:, None] * delta[None, :])
        info = (n * pr * (1 - pr) * delta ** 2).sum(axis=1) + RIDGE
        step = (((k - n * pr) * delta).sum(axis=1) - RIDGE * g) / info
        g += step
        if np.abs(step).max(initial=0.0) < 1e-7:
            break
    return g, info


__all__ = ["Adjusted", "mantel_haenszel", "logistic_length", "paired_length"]
