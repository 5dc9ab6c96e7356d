"""Cluster a corpus with BERTopic on SAE embeddings and name each topic by its latents' labels.

    pip install bertopic        # adds bertopic, umap-learn, pynndescent and plotly (≈70 MB)
    python scripts/bertopic_topics.py [--corpus ../shared/datasets/ag_news_test/data.parquet] [--docs 300]

Prints a markdown table: each topic's size, its share of each ground-truth class (the corpus'
``label`` column, where there is one) and its five most distinctive latents. The output shown in
docs/guide/sklearn.md comes from this script.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path,
                    default=REPO.parent / "shared" / "datasets" / "ag_news_test" / "data.parquet")
    ap.add_argument("--text-col", default="text")
    ap.add_argument("--label-col", default="label")
    ap.add_argument("--docs", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from bertopic import BERTopic
    from hdbscan import HDBSCAN
    from sklearn.decomposition import TruncatedSVD
    from sklearn.pipeline import make_pipeline
    from umap import UMAP

    from saeembed import SAEEncoder
    from saeembed.topics import SAERepresentation

    df = pl.read_parquet(args.corpus).sample(args.docs, seed=args.seed)
    texts = df[args.text_col].to_list()
    enc = SAEEncoder(pooling="binary")
    model = BERTopic(embedding_model=make_pipeline(enc, TruncatedSVD(50, random_state=args.seed)),
                     umap_model=UMAP(n_neighbors=15, n_components=5, min_dist=0.0, metric="cosine",
                                     random_state=args.seed),
                     hdbscan_model=HDBSCAN(min_cluster_size=15, prediction_data=True),
                     representation_model=SAERepresentation(enc, top_n=5))
    t0 = time.perf_counter()
    topics, _ = model.fit_transform(texts)
    took = time.perf_counter() - t0
    topics = np.asarray(topics)
    classes = df[args.label_col].cast(pl.String).to_list() if args.label_col in df.columns else None
    names = sorted(set(classes)) if classes else []
    print(f"{len(texts)} documents, {len(set(topics.tolist()) - {-1})} topics, {took:.0f} s\n")
    print("| topic | docs | " + "".join(f"{c} | " for c in names) + "top latents (share inside − outside) |")
    print("|---|---|" + "---|" * len(names) + "---|")
    for topic in sorted(set(topics.tolist())):
        inside = topics == topic
        shares = [f"{np.mean([c == n for c, i in zip(classes, inside) if i]):.0%}" for n in names] if classes else []
        words = "; ".join(f"{w} ({s:+.2f})" for w, s in model.get_topic(topic)[:5])
        print(f"| {topic} | {int(inside.sum())} | " + "".join(f"{s} | " for s in shares) + f"{words} |")


if __name__ == "__main__":
    main()
