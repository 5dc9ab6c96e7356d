"""How much sentiment an SAE's latents carry on the evaluation's Amazon reviews (docs/evaluation.md).

    python scripts/sentiment_probe.py --store /path/to/eval.duckdb        # the default SAE
    python scripts/sentiment_probe.py --store /path/to/eval_doc.duckdb    # the document-level SAE
    python scripts/sentiment_probe.py --store /path/to/eval.duckdb --pooling share

Fitted on the even (dev) rows, reported on the odd (held-out) rows: a logistic probe on every latent's
presence, and the ceiling of query-free selection — spectral clustering (k = 2) on the N latents whose
frequency differs most between negative and positive dev reviews, scored by NMI with sentiment. When
these latents do not cluster by sentiment either, no query can steer the clustering to it.

Then the ceiling of an *axis* (two poles) rather than a clustering: each review scored by how many
of the N most positive-leaning dev latents it has minus the N most negative-leaning, cut at the dev
median (k = 2) or quartiles (k = 4) — the best any pole selection could do with these latents — and
the same signed score with the latents the query machinery selects for generic pole words (the
paradigm words of Turney & Littman 2003, chosen before looking at any review), per selection method.

``--pooling share`` asks the same of the share of a review's tokens on which each latent fires
(``store.embeddings(corpus, pooling="share")``, standardised on the dev rows) instead of its
presence after max-pooling, with k-means in place of the clustering pipeline (which binarises).
Why: a long review has a few positive *and* a few negative tokens, so presence says little about
its overall tone, while the share of such tokens might.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import normalized_mutual_info_score

from saeembed.analysis.cluster import cluster, cluster_assignments
from saeembed.analysis.common import binary_matrix, corpus_info
from saeembed.analysis.select import select_features
from saeembed.api import open_store
from saeembed.ids import ROW_MASK


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--corpus", default="amazon")
    ap.add_argument("--pooling", choices=("presence", "share"), default="presence",
                    help="presence: max-pooled latent > 0 (what the analyses use); share: tokens fired on / tokens")
    args = ap.parse_args()
    st = open_store(args.store)
    info = corpus_info(st, args.corpus)
    docs = st.documents(args.corpus).select("row_idx", "meta")
    sentiment = {r: json.loads(m)["sentiment"] for r, m in zip(docs["row_idx"].to_list(), docs["meta"].to_list())}
    domain = {r: json.loads(m)["domain"] for r, m in zip(docs["row_idx"].to_list(), docs["meta"].to_list())}
    if args.pooling == "share":
        mat, doc_ids = st.embeddings(args.corpus, pooling="share")
        rows = doc_ids.astype(np.int64) & ROW_MASK
        x = mat.toarray()
        dev = rows % 2 == 0
        spread = x[dev].std(axis=0)
        x = (x - x[dev].mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    else:
        mat, rows = binary_matrix(st, info, list(range(int(info["d_sae"]))))
        x = mat.toarray()
        dev = rows % 2 == 0
    y = np.array([sentiment[int(r)] for r in rows])
    dom = np.array([domain[int(r)] for r in rows])
    # standardised shares need a stronger penalty than 0/1 presence to stay comparable across 6k latents
    probe = LogisticRegression(C=1.0 if args.pooling == "presence" else 0.05, max_iter=3000).fit(x[dev], y[dev])
    print(f"probe: sentiment accuracy on held-out rows {probe.score(x[~dev], y[~dev]):.3f}")
    pos = y == np.unique(y)[0]
    gap = np.abs(x[dev & pos].mean(axis=0) - x[dev & ~pos].mean(axis=0))
    for n in (10, 30, 100):
        top = np.argsort(-gap)[:n]
        if args.pooling == "share":
            pred = KMeans(2, n_init=5, random_state=0).fit_predict(x[:, top])
        else:
            res = cluster_assignments(cluster(st, args.corpus, features=top.tolist(), k=2))
            got = dict(zip(res["row_idx"].to_list(), res["cluster"].to_list()))
            pred = np.array([got.get(int(r), -1) for r in rows])
        print(f"{n} most sentiment-differing dev latents, k = 2, held-out NMI: sentiment "
              f"{normalized_mutual_info_score(y[~dev], pred[~dev]):.3f}, domain "
              f"{normalized_mutual_info_score(dom[~dev], pred[~dev]):.3f}")
    signed = x[dev & pos].mean(axis=0) - x[dev & ~pos].mean(axis=0)
    for n in (10, 30, 100):
        score = x[:, np.argsort(-signed)[:n]].sum(1) - x[:, np.argsort(signed)[:n]].sum(1)
        print(f"axis ceiling, {n} + {n} most one-sided dev latents: " + axis_nmi(score, y, dom, dev))
    for method in ("labels", "descriptors"):
        for n in (10, 30, 100):
            a, b = (select_features(st, p, info["sae"], k=n, method=method, info=info)["feature_id"].to_numpy()
                    for p in POLES)
            a, b = np.setdiff1d(a, b), np.setdiff1d(b, a)
            print(f"axis from pole words ({method}, {n} per pole): "
                  + axis_nmi(x[:, a].sum(1) - x[:, b].sum(1), y, dom, dev))


# Turney & Littman (2003), "Measuring praise and criticism": the paradigm positive / negative words
POLES = ("good, nice, excellent, positive, fortunate, correct, superior",
         "bad, nasty, poor, negative, unfortunate, wrong, inferior")


def axis_nmi(score: np.ndarray, y: np.ndarray, dom: np.ndarray, dev: np.ndarray) -> str:
    """Held-out NMI of a 1-D score cut at the dev median (k = 2) and quartiles (k = 4)."""
    out = []
    for k in (2, 4):
        cuts = np.quantile(score[dev], np.linspace(0, 1, k + 1)[1:-1])
        pred = np.searchsorted(cuts, score, side="right")
        out.append(f"k = {k}: sentiment {normalized_mutual_info_score(y[~dev], pred[~dev]):.3f}, "
                   f"domain {normalized_mutual_info_score(dom[~dev], pred[~dev]):.3f}")
    return "; ".join(out)


if __name__ == "__main__":
    main()
