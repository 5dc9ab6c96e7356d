"""Measure the library parts the clustering now relies on against what they replaced.

    python benchmarks/clustering_swaps.py [--store S --corpus C] [--n 1500] [--max-docs 500]

1. Eigengap: ``scipy.sparse.linalg.eigsh`` (top 13 eigenvalues) vs the dense ``scipy.linalg.eigh``
   on the normalised Jaccard affinity of real documents; reports both times (alternating runs),
   their ratio, and whether they choose the same k.
2. Documents beyond ``max_docs`` with HDBSCAN: the sample is clustered and the others are placed
   either by the earlier rule (the cluster with the highest mean Jaccard to its central members) or
   by ``hdbscan.approximate_predict``. Both are compared with a full HDBSCAN fit on every document
   (adjusted Rand index of the placed documents' labels, and the share each rule leaves as noise).

Without ``--store`` the 1,500 GoEmotions comments of ``datasets/`` are encoded once with the default
reader and SAE into ``benchmarks/.cache/swaps.duckdb``. Latents: the corpus' 300 most frequent.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]


def _store(args: argparse.Namespace) -> tuple[Path, str]:
    if args.store:
        return Path(args.store), args.corpus
    import saeembed

    path = REPO / "benchmarks" / ".cache" / "swaps.duckdb"
    path.parent.mkdir(parents=True, exist_ok=True)
    st = saeembed.open_store(path)
    if "ge" not in st.corpora()["name"].to_list():
        st.encode(REPO / "datasets" / "goemotions" / "sample.parquet", name="ge", progress=True)
    return path, "ge"


def _matrix(store: Path, corpus: str, n: int, n_features: int):
    import saeembed
    from saeembed.analysis.common import binary_matrix
    from saeembed.store.corpusinfo import corpus_info
    from saeembed.store.queries import run_query

    st = saeembed.open_store(store)
    with st.reading():
        info = corpus_info(st, corpus)
        feats = run_query(st, "feature_frequencies", {"lo": info.lo, "hi": info.hi, "threshold": 0.0,
                                                       "min_support": 5, "n": n_features})["feature_id"].to_list()
        mat, _ = binary_matrix(st, info, feats)
    mat = mat[np.asarray(mat.sum(axis=1)).ravel() > 0]
    return mat[:n]


def eigengap_comparison(mat, repeats: int) -> dict:
    from saeembed.analysis.clustering import eigengap_k, jaccard

    sim = jaccard(mat)
    times: dict[str, list[float]] = {"dense": [], "auto": []}
    ks = {}
    for _ in range(repeats):
        for solver in ("dense", "auto"):  # alternating, so machine noise hits both alike
            t0 = time.perf_counter()
            ks[solver] = eigengap_k(sim, solver=solver)
            times[solver].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {"n": sim.shape[0], "dense_s": med["dense"], "eigsh_s": med["auto"],
            "speedup": med["dense"] / med["auto"], "k_dense": ks["dense"], "k_eigsh": ks["auto"]}


def placement_comparison(mat, max_docs: int, min_cluster_size: int, seed: int) -> dict:
    from sklearn.metrics import adjusted_rand_score

    from saeembed.analysis.clustering import (
        assign_nearest,
        central_references,
        fit_similarity,
        hdbscan_sample_predict,
        jaccard,
        within_centrality,
    )

    n = mat.shape[0]
    rng = np.random.default_rng(seed)
    full, _, _ = fit_similarity(jaccard(mat), "hdbscan", None, min_cluster_size, seed)
    fit_idx = np.sort(rng.choice(n, max_docs, replace=False))
    rest = np.setdiff1d(np.arange(n), fit_idx)
    t0 = time.perf_counter()
    lab_pkg, _, rest_pkg, _ = hdbscan_sample_predict(mat[fit_idx], mat[rest], min_cluster_size)
    t_pkg = time.perf_counter() - t0
    t0 = time.perf_counter()
    sim = jaccard(mat[fit_idx])
    lab_old, _, _ = fit_similarity(sim, "hdbscan", None, min_cluster_size, seed)
    ref = central_references(lab_old, within_centrality(sim, lab_old))
    rest_old, _ = assign_nearest(mat[rest], mat[fit_idx[ref]], lab_old[ref])
    t_old = time.perf_counter() - t0
    return {"n": n, "max_docs": max_docs, "placed": len(rest),
            "ari_vs_full_nearest_rule": float(adjusted_rand_score(full[rest], rest_old)),
            "ari_vs_full_approximate_predict": float(adjusted_rand_score(full[rest], rest_pkg)),
            "noise_share_full": float((full[rest] < 0).mean()),
            "noise_share_nearest_rule": float((rest_old < 0).mean()),
            "noise_share_approximate_predict": float((rest_pkg < 0).mean()),
            "clusters_full": int(full.max()) + 1, "clusters_sample_pkg": int(lab_pkg.max()) + 1,
            "seconds_nearest_rule": t_old, "seconds_approximate_predict": t_pkg}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store")
    ap.add_argument("--corpus", default="ge")
    ap.add_argument("--n", type=int, default=1500, help="documents (rows with a selected latent)")
    ap.add_argument("--features", type=int, default=300, help="most frequent latents clustered on")
    ap.add_argument("--max-docs", type=int, default=500, help="sample size for the placement comparison")
    ap.add_argument("--min-cluster-size", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    store, corpus = _store(args)
    mat = _matrix(store, corpus, args.n, args.features)
    eig = eigengap_comparison(mat, args.repeats)
    print(f"eigengap on {eig['n']} documents: dense eigh {eig['dense_s']:.3f} s, eigsh {eig['eigsh_s']:.3f} s "
          f"({eig['speedup']:.1f}x); k = {eig['k_dense']} (dense) / {eig['k_eigsh']} (eigsh)")
    pl_ = placement_comparison(mat, args.max_docs, args.min_cluster_size, args.seed)
    print(f"HDBSCAN beyond max_docs ({pl_['placed']} of {pl_['n']} documents placed after a {pl_['max_docs']}-doc "
          f"sample): ARI vs a full fit {pl_['ari_vs_full_nearest_rule']:.3f} (nearest-cluster rule) / "
          f"{pl_['ari_vs_full_approximate_predict']:.3f} (approximate_predict); noise share "
          f"{pl_['noise_share_full']:.2f} full / {pl_['noise_share_nearest_rule']:.2f} rule / "
          f"{pl_['noise_share_approximate_predict']:.2f} approximate_predict")


if __name__ == "__main__":
    main()
