"""How much sentiment an SAE's latents carry on the evaluation's Amazon reviews (the README's probe figures).

    python scripts/sentiment_probe.py --store /path/to/eval.duckdb        # the default SAE
    python scripts/sentiment_probe.py --store /path/to/eval_doc.duckdb    # the document-level SAE

Fitted on the even (dev) rows, reported on the odd (held-out) rows: a logistic probe on every latent's
presence, and the ceiling of query-free selection — spectral clustering (k = 2) on the N latents whose
frequency differs most between negative and positive dev reviews, scored by NMI with sentiment. When
these latents do not cluster by sentiment either, no query can steer the clustering to it.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import normalized_mutual_info_score

from saeembed.analysis.cluster import cluster, cluster_assignments
from saeembed.analysis.common import binary_matrix, corpus_info
from saeembed.api import open_store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--corpus", default="amazon")
    args = ap.parse_args()
    st = open_store(args.store)
    info = corpus_info(st, args.corpus)
    docs = st.documents(args.corpus).select("row_idx", "meta")
    sentiment = {r: json.loads(m)["sentiment"] for r, m in zip(docs["row_idx"].to_list(), docs["meta"].to_list())}
    domain = {r: json.loads(m)["domain"] for r, m in zip(docs["row_idx"].to_list(), docs["meta"].to_list())}
    mat, rows = binary_matrix(st, info, list(range(int(info["d_sae"]))))
    x = mat.toarray()
    y = np.array([sentiment[int(r)] for r in rows])
    dom = np.array([domain[int(r)] for r in rows])
    dev = rows % 2 == 0
    probe = LogisticRegression(C=1.0, max_iter=2000).fit(x[dev], y[dev])
    print(f"probe: sentiment accuracy on held-out rows {probe.score(x[~dev], y[~dev]):.3f}")
    pos = y == np.unique(y)[0]
    gap = np.abs(x[dev & pos].mean(axis=0) - x[dev & ~pos].mean(axis=0))
    for n in (10, 30, 100):
        res = cluster_assignments(cluster(st, args.corpus, features=np.argsort(-gap)[:n].tolist(), k=2))
        got = dict(zip(res["row_idx"].to_list(), res["cluster"].to_list()))
        pred = np.array([got.get(int(r), -1) for r in rows])
        print(f"{n} most sentiment-differing dev latents, k = 2, held-out NMI: sentiment "
              f"{normalized_mutual_info_score(y[~dev], pred[~dev]):.3f}, domain "
              f"{normalized_mutual_info_score(dom[~dev], pred[~dev]):.3f}")


if __name__ == "__main__":
    main()
