"""BERTopic topics described by SAE latents: each topic's most distinctive latents, named by their labels.

BERTopic (``pip install bertopic``) takes any scikit-learn pipeline as its embedding model, so SAE
embeddings cluster a corpus with :class:`saeembed.SAEEncoder` in a pipeline; :class:`SAERepresentation`
then describes each topic by the latents present in more of its documents than of the others
(share inside minus share outside, as ``saeembed cluster`` describes its clusters) instead of by
c-TF-IDF words::

    from bertopic import BERTopic
    from sklearn.decomposition import TruncatedSVD
    from sklearn.pipeline import make_pipeline
    from saeembed import SAEEncoder
    from saeembed.topics import SAERepresentation

    enc = SAEEncoder(pooling="binary")
    model = BERTopic(embedding_model=make_pipeline(enc, TruncatedSVD(50)),
                     representation_model=SAERepresentation(enc))
    topics, _ = model.fit_transform(texts)
    model.get_topic_info()          # Representation: the topics' top latent labels

The representation reuses the rows the encoder computed for the embedding step (no second forward).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from bertopic.representation import BaseRepresentation

from .encoder import SAEEncoder


class SAERepresentation(BaseRepresentation):
    """A BERTopic representation model: per topic, the ``top_n`` latents whose share of documents
    inside the topic most exceeds their share outside it, as (latent name, share difference)."""

    def __init__(self, encoder: SAEEncoder | None = None, top_n: int = 10) -> None:
        self.encoder = encoder if encoder is not None else SAEEncoder(pooling="binary")
        self.top_n = top_n

    def extract_topics(self, topic_model: Any, documents: Any, c_tf_idf: Any,
                       topics: dict[int, list[tuple[str, float]]]) -> dict[int, list[tuple[str, float]]]:
        present = (self.encoder.transform(documents["Document"].tolist()) > 0).astype(np.float32).tocsr()
        names = self.encoder.get_feature_names_out()
        labels = documents["Topic"].to_numpy()
        n = len(labels)
        total = np.asarray(present.sum(axis=0)).ravel()
        out = {}
        for topic in topics:
            inside = labels == topic
            k = int(inside.sum())
            if k == 0 or k == n:
                out[topic] = topics[topic]
                continue
            share_in = np.asarray(present[inside].sum(axis=0)).ravel() / k
            share_out = (total - share_in * k) / (n - k)
            diff = share_in - share_out
            best = np.argsort(-diff, kind="stable")[: self.top_n]
            out[topic] = [(str(names[i]), float(diff[i])) for i in best if diff[i] > 0] or topics[topic]
        return out


__all__ = ["SAERepresentation"]
