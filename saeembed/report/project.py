"""2-D maps of documents: t-SNE (scikit-learn) of their vectors.

Why t-SNE: it ships with scikit-learn (a core dependency) and keeps neighbourhoods; UMAP would add
numba. Wide inputs (6k-latent SAE vectors, 384-d MiniLM) are first reduced to 50 dimensions by a
truncated SVD of the L2-normalised rows (cosine geometry), the usual preprocessing for t-SNE.
"""

from __future__ import annotations

import numpy as np

from ..errors import UserError

SVD_DIMS = 50
# Below this many points t-SNE runs on one OpenMP thread: its Barnes-Hut gradient spin-waits, and on
# a busy 2-core machine two threads took 47 s for 400 points where one took 2.7 s.
ONE_THREAD_BELOW = 20_000


def _perplexity(n: int) -> float:
    return float(max(2.0, min(30.0, (n - 1) / 3.0)))


def _fit(tsne, x: np.ndarray) -> np.ndarray:
    from threadpoolctl import threadpool_limits

    if x.shape[0] < ONE_THREAD_BELOW:
        with threadpool_limits(limits=1, user_api="openmp"):
            return tsne.fit_transform(x).astype(np.float32)
    return tsne.fit_transform(x).astype(np.float32)


def project_vectors(x, seed: int = 0) -> np.ndarray:
    """[n, 2] coordinates of the rows of ``x`` (cosine geometry)."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.manifold import TSNE
    from sklearn.preprocessing import normalize

    n = x.shape[0]
    if n < 4:
        raise UserError(f"a map needs at least 4 documents, not {n}")
    x = normalize(x.astype(np.float32), norm="l2")
    dims = min(SVD_DIMS, x.shape[1] - 1, n - 1)
    if dims >= 2 and x.shape[1] > SVD_DIMS:
        x = TruncatedSVD(n_components=dims, random_state=seed).fit_transform(x)
    x = np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float32)
    return _fit(TSNE(n_components=2, perplexity=_perplexity(n), init="pca", random_state=seed), x)


def idf_weighted(x, doc_freq: np.ndarray, n_docs: int):
    """Columns scaled by their IDF ``log((N + 1) / (n + 1))``: latents that fire in nearly every document
    (syntax, position) would otherwise dominate the geometry of max-pooled SAE vectors."""
    idf = np.log((n_docs + 1.0) / (np.asarray(doc_freq, np.float64) + 1.0)).astype(np.float32)
    return x.multiply(idf[None, :]).tocsr()


__all__ = ["project_vectors", "idf_weighted"]
