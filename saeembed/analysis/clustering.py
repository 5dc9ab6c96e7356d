"""The clustering algorithms behind ``saeembed cluster``: Jaccard affinities, the eigengap, spectral
clustering or HDBSCAN on a sample, and placing the documents beyond the sample.

Beyond ``max_docs`` documents the dense similarity matrix (4·N² bytes) is not built; a sample is
clustered and the others are placed:

- spectral: each remaining document joins the cluster whose 200 most central sampled members it is
  most similar to on average (Jaccard, computed in blocks);
- HDBSCAN: the sample is clustered by the ``hdbscan`` package with ``prediction_data`` and the
  remaining documents are placed by ``hdbscan.approximate_predict`` — they may be noise (−1) too,
  exactly as they would be in a full fit, and come with a membership strength. Up to ``max_docs``,
  scikit-learn's HDBSCAN on precomputed ``1 − Jaccard`` distances is used (it takes the matrix we
  already have, and measured 1.2–2× faster than the ``hdbscan`` package here).
"""

from __future__ import annotations

import warnings

import numpy as np

from ..errors import UserError

MAX_K = 12
ASSIGN_REF = 200  # central members per cluster that documents beyond max_docs are compared with
EIGSH_MIN_N = 200  # below this many documents the dense eigensolver is as fast as Lanczos


def jaccard(mat, other=None) -> np.ndarray:
    """Dense float32 Jaccard similarity between the rows of binary sparse matrices (0 where both are empty)."""
    other = mat if other is None else other
    inter = (mat @ other.T).toarray().astype(np.float32)
    sa = np.asarray(mat.sum(axis=1), dtype=np.float32).ravel()
    sb = np.asarray(other.sum(axis=1), dtype=np.float32).ravel()
    union = sa[:, None] + sb[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0).astype(np.float32)


def eigengap_k(affinity: np.ndarray, max_k: int = MAX_K, solver: str = "auto") -> int:
    """Number of clusters at the largest gap among the top eigenvalues of D^-½ A D^-½ (k >= 2).

    Only the top ``max_k + 1`` eigenvalues are needed, so ``solver="auto"`` computes just those with
    ``scipy.sparse.linalg.eigsh`` (Lanczos) from :data:`EIGSH_MIN_N` documents on, and uses the dense
    ``eigh`` below that (as fast there, and Lanczos needs ``k < n``); ``"dense"`` forces ``eigh`` (the
    reference the tests and the benchmark compare with).
    """
    n = affinity.shape[0]
    if n <= 3:
        return 2
    a = affinity.astype(np.float64)
    d = a.sum(axis=1)
    dinv = 1 / np.sqrt(np.maximum(d, 1e-12))
    norm = a * dinv[:, None] * dinv[None, :]
    top = min(max_k + 1, n - 1)
    dense = solver == "dense" or n < EIGSH_MIN_N or top >= n - 1
    vals = np.sort(_dense_top(norm, top) if dense else _lanczos_top(norm, top))[::-1]
    gaps = vals[1:top - 1] - vals[2:top]  # gaps[0] = λ2 − λ3: the gap after k = 2
    return int(np.argmax(gaps)) + 2 if len(gaps) else 2


def _dense_top(sym: np.ndarray, top: int) -> np.ndarray:
    from scipy.linalg import eigh

    n = sym.shape[0]
    return eigh(sym, eigvals_only=True, subset_by_index=[n - top, n - 1])


def _lanczos_top(sym: np.ndarray, top: int) -> np.ndarray:
    from scipy.sparse.linalg import eigsh

    n = sym.shape[0]
    return eigsh(sym, k=top, which="LA", return_eigenvectors=False, tol=1e-10, v0=np.full(n, 1 / np.sqrt(n)))


def fit_similarity(sim: np.ndarray, method: str, k: int | None, min_cluster_size: int,
                   seed: int) -> tuple[np.ndarray, int, np.ndarray | None]:
    """(labels, number of clusters, HDBSCAN membership probabilities or None) for a Jaccard matrix;
    label −1 is HDBSCAN noise."""
    n = sim.shape[0]
    if method == "spectral":
        from sklearn.cluster import SpectralClustering

        k = k or eigengap_k(sim)
        if k >= n:
            raise UserError(f"--k {k} needs more than {n} clusterable documents; lower --k")
        sc = SpectralClustering(n_clusters=k, affinity="precomputed", random_state=seed, assign_labels="cluster_qr")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*not fully connected.*")
            return sc.fit_predict(sim.astype(np.float64)), k, None
    from sklearn.cluster import HDBSCAN  # takes the precomputed distances directly; see the module docstring

    dist = np.clip(1.0 - sim.astype(np.float64), 0.0, 1.0)
    model = HDBSCAN(metric="precomputed", min_cluster_size=max(2, min_cluster_size), copy=True).fit(dist)
    if model.labels_.max() < 0:
        # HDBSCAN never returns its root as a cluster unless told to, so one dense group among
        # scattered documents (the typical result of a targeted selection) comes out as all noise
        model = HDBSCAN(metric="precomputed", min_cluster_size=max(2, min_cluster_size),
                        allow_single_cluster=True, copy=True).fit(dist)
    return model.labels_, int(model.labels_.max()) + 1, model.probabilities_.astype(np.float64)


def within_centrality(sim: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean Jaccard of each member to the other members of its cluster (0 for noise and singletons)."""
    central = np.zeros(len(labels))
    for c in np.unique(labels):
        m = labels == c
        if c >= 0 and m.sum() > 1:
            central[m] = (sim[np.ix_(m, m)].sum(axis=1) - 1) / (m.sum() - 1)
    return central


def partition(mat, placed: np.ndarray, n_rows: int, method: str, k: int | None, min_cluster_size: int,
              max_docs: int, rng: np.random.Generator, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(cluster, centrality, membership, k) of every row of ``mat``; rows not in ``placed`` stay −1.

    Up to ``max_docs`` placed rows are clustered together; beyond, a sample is clustered and the rest
    placed (see the module docstring). ``membership`` is HDBSCAN's probability/strength (NaN for
    spectral clustering).
    """
    fit_idx = placed if len(placed) <= max_docs else np.sort(rng.choice(placed, max_docs, replace=False))
    rest = np.setdiff1d(placed, fit_idx)
    clusters = np.full(n_rows, -1, dtype=np.int64)
    central = np.zeros(n_rows)
    membership = np.full(n_rows, np.nan)
    sim = jaccard(mat[fit_idx])
    if method == "hdbscan" and len(rest):
        lab, prob, rest_lab, strength = hdbscan_sample_predict(mat[fit_idx], mat[rest], min_cluster_size)
        k_used = int(lab.max()) + 1
        membership[fit_idx], membership[rest], clusters[rest] = prob, strength, rest_lab
    else:
        lab, k_used, prob = fit_similarity(sim, method, k, min_cluster_size, seed)
        if prob is not None:
            membership[fit_idx] = prob
    clusters[fit_idx] = lab
    central[fit_idx] = within_centrality(sim, lab)
    if len(rest):
        ref = central_references(lab, central[fit_idx])
        nearest, score = assign_nearest(mat[rest], mat[fit_idx[ref]], lab[ref])
        if method == "hdbscan":  # approximate_predict decided the cluster; centrality only where it agrees
            central[rest] = np.where(nearest == clusters[rest], score, 0.0)
        else:
            clusters[rest], central[rest] = nearest, score
    return clusters, central, membership, k_used


def assign_nearest(rest, sample, labels: np.ndarray, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Cluster (and mean Jaccard to it) of each ``rest`` row: the cluster of the sampled documents
    it is most similar to on average. Noise (−1) is not a cluster one can join."""
    ids = np.unique(labels[labels >= 0])
    if len(ids) == 0:
        return np.full(rest.shape[0], -1), np.zeros(rest.shape[0])
    onehot = (labels[:, None] == ids[None, :]).astype(np.float32)
    onehot /= onehot.sum(axis=0, keepdims=True)
    out_c = np.empty(rest.shape[0], dtype=np.int64)
    out_s = np.empty(rest.shape[0], dtype=np.float64)
    for s in range(0, rest.shape[0], block):
        mean_sim = jaccard(rest[s:s + block], sample) @ onehot
        best = mean_sim.argmax(axis=1)
        out_c[s:s + block] = ids[best]
        out_s[s:s + block] = mean_sim[np.arange(len(best)), best]
    return out_c, out_s


def central_references(labels: np.ndarray, centrality: np.ndarray, per_cluster: int = ASSIGN_REF) -> np.ndarray:
    """Indices of each cluster's ``per_cluster`` most central members: the documents the rest of a
    large corpus is compared with (comparing with every sampled member costs N × max_docs)."""
    out = []
    for c in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == c)
        out.append(members[np.argsort(-centrality[members], kind="stable")[:per_cluster]])
    return np.sort(np.concatenate(out)) if out else np.zeros(0, dtype=np.int64)


def hdbscan_sample_predict(sample, rest, min_cluster_size: int
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """HDBSCAN on a sample, then the other documents placed by ``hdbscan.approximate_predict``.

    Returns (sample labels, sample membership probabilities, rest labels, rest strengths). The
    ``hdbscan`` package keeps the condensed tree (``prediction_data=True``), so a remaining document
    lands in the cluster it would have joined, or in noise (−1), instead of being forced into the
    nearest cluster. Jaccard is computed on the boolean rows, as for the sample's own fit.
    """
    import hdbscan

    xs = sample.toarray().astype(bool)
    size = max(2, min_cluster_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # jaccard on booleans converts silently; duplicates warn
        model = hdbscan.HDBSCAN(min_cluster_size=size, metric="jaccard", prediction_data=True).fit(xs)
        if model.labels_.max() < 0:
            model = hdbscan.HDBSCAN(min_cluster_size=size, metric="jaccard", prediction_data=True,
                                    allow_single_cluster=True).fit(xs)
        rest_labels, strengths = hdbscan.approximate_predict(model, rest.toarray().astype(bool))
    return (model.labels_.astype(np.int64), np.nan_to_num(model.probabilities_.astype(np.float64)),
            rest_labels.astype(np.int64), np.nan_to_num(np.asarray(strengths, dtype=np.float64)))


__all__ = ["jaccard", "eigengap_k", "fit_similarity", "assign_nearest", "central_references", "partition",
           "within_centrality",
           "hdbscan_sample_predict", "MAX_K", "ASSIGN_REF", "EIGSH_MIN_N"]
