"""SAE embeddings inside scikit-learn (and tools built on it, such as BERTopic), without a store.

:class:`SAEEncoder` is a scikit-learn transformer: ``fit`` learns nothing, ``transform(texts)``
returns a scipy CSR matrix [n_texts, d_sae] of pooled SAE latents, ``get_feature_names_out()``
names each column by its latent's label. The rows are computed by the same code an encode runs
(:func:`saeembed.encode.run.tokenise_shard` and :func:`~saeembed.encode.run.encode_shard`: windows,
template tokens excluded from pooling, the shared-prefix cache), so they equal the rows
``saeembed encode`` stores for the same texts and settings::

    from sklearn.pipeline import make_pipeline
    from sklearn.linear_model import LogisticRegression
    from saeembed import SAEEncoder

    clf = make_pipeline(SAEEncoder(pooling="max"), LogisticRegression(max_iter=1000))
    clf.fit(train_texts, train_labels)

Each encoder keeps the rows of the texts it transformed (up to ``cache_docs``), so a second pass
over the same texts (BERTopic's topic representation after its embedding step,
:mod:`saeembed.topics`) costs no forward.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterable

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from .corpus import Corpus
from .errors import UserError

POOLINGS = ("max", "sum", "mean", "count", "share", "binary")
SHARD_TEXTS = 256  # texts tokenised and batched together (memory stays bounded for long inputs)


class SAEEncoder(TransformerMixin, BaseEstimator):
    """Texts → pooled SAE latents (scipy CSR, float32), as a stateless scikit-learn transformer.

    ``sae``: an ``--sae`` spec (``default``, ``doc``, a checkpoint folder, ``hf:...``); ``reader``,
    ``layer``: default to the SAE's own; ``pooling``: ``max`` (the stored value), ``sum``, ``mean``
    (sum / content tokens), ``count`` (tokens where the latent fires), ``share`` (count / content
    tokens) or ``binary`` (1 where the latent fires). Models load on the first ``transform``.
    """

    def __init__(self, sae: str = "default", reader: str | None = None, layer: int | None = None,
                 pooling: str = "max", device: str = "auto", dtype: str = "auto", batch_tokens: int = 4096,
                 cache_docs: int = 100_000) -> None:
        self.sae = sae
        self.reader = reader
        self.layer = layer
        self.pooling = pooling
        self.device = device
        self.dtype = dtype
        self.batch_tokens = batch_tokens
        self.cache_docs = cache_docs

    # -- scikit-learn protocol ----------------------------------------------------------------------
    def fit(self, X: Iterable[str] | None = None, y: Any = None) -> SAEEncoder:
        """Nothing to learn (the SAE is trained already); checks the settings and returns self."""
        if self.pooling not in POOLINGS:
            raise UserError(f"unknown pooling {self.pooling!r}; use one of {', '.join(POOLINGS)}")
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = False
        tags.requires_fit = False
        return tags

    def transform(self, X: Iterable[str]) -> Any:
        """CSR [len(X), d_sae] of each text's pooled latents (rows in the order of ``X``)."""
        from scipy import sparse

        self.fit()
        texts = _texts(X)
        rows = self._rows(texts)
        indptr = np.zeros(len(texts) + 1, dtype=np.int64)
        indptr[1:] = np.cumsum([len(r[0]) for r in rows])
        indices = np.concatenate([r[0] for r in rows]) if rows else np.zeros(0, np.int32)
        data = np.concatenate([self._pooled(r) for r in rows]) if rows else np.zeros(0, np.float32)
        return sparse.csr_matrix((data.astype(np.float32), indices, indptr), shape=(len(texts), self.d_sae_))

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """One name per latent: its id and the label analyses show (``"3270 thank, you"``; the latent's
        strongest context where no label reaches the floor), the id alone when unlabelled."""
        _, _, labels = self._models()
        return np.array([f"{i} {labels[i]}" if labels.get(i) else str(i) for i in range(self.d_sae_)], dtype=object)

    # -- models and rows ----------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        # the loaded models and the row cache stay behind; a copy loads its own on first use
        return {k: v for k, v in self.__dict__.items() if k not in ("_loaded", "_cache")}

    def _models(self) -> tuple[Any, Any, dict[int, str]]:
        loaded = getattr(self, "_loaded", None)
        if loaded is None:
            from .encode.options import EncodeOptions
            from .encode.plan import load_reader, resolve_layer
            from .labelrule import DEAD_LABEL, shown_labels
            from .sae import open_sae

            sae = open_sae(self.sae or "default")
            layer = resolve_layer(sae, self.layer)
            opts = EncodeOptions(reader=self.reader, layer=layer, sae=self.sae, device=self.device, dtype=self.dtype)
            rdr = load_reader(opts, sae, layer)
            labels = {}
            if sae.labels is not None and sae.labels.height:
                # the label analyses show (a latent may ship several rows: labels and its strongest context)
                best = shown_labels(sae.labels.filter(sae.labels["label"].is_not_null()))
                labels = {int(f): str(lab) for f, lab in zip(best["feature_id"], best["label"]) if lab != DEAD_LABEL}
            loaded = self._loaded = (rdr, sae.sae.to(rdr.device).eval(), labels)
            self.d_sae_ = int(sae.sae.cfg.d_sae)
        return loaded

    def _rows(self, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]]:
        """Per text: (latent ids, max, sum, count, content tokens), from the cache or a forward."""
        import polars as pl

        from .encode.run import encode_shard, tokenise_shard

        rdr, sae, _ = self._models()
        cache: OrderedDict = self.__dict__.setdefault("_cache", OrderedDict())
        todo = list(dict.fromkeys(t for t in texts if t not in cache))
        for s0 in range(0, len(todo), SHARD_TEXTS):
            part = todo[s0:s0 + SHARD_TEXTS]
            docs = pl.DataFrame({"row_idx": np.arange(len(part), dtype=np.int64), "text": part,
                                 "meta": [None] * len(part)}, schema={"row_idx": pl.Int64, "text": pl.String,
                                                                       "meta": pl.String})
            work = tokenise_shard(rdr, Corpus("python:SAEEncoder", docs, "text", ""), 0, len(part), self.batch_tokens)
            acts = encode_shard(rdr, sae, work).partition_by("row_idx", as_dict=True)
            for i, text in enumerate(part):
                a = acts.get((i,))
                cache[text] = ((a["feature_id"].to_numpy().astype(np.int32), a["value"].to_numpy(),
                                a["total"].to_numpy(), a["n_active"].to_numpy(), int(work.n_tokens[i]))
                               if a is not None else (np.zeros(0, np.int32), *(np.zeros(0, np.float32),) * 3,
                                                      int(work.n_tokens[i])))
        out = [cache[t] for t in texts]
        for t in todo:  # least recently used first out, beyond cache_docs
            cache.move_to_end(t)
        while len(cache) > max(int(self.cache_docs), 0):
            cache.popitem(last=False)
        return out

    def _pooled(self, row: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]) -> np.ndarray:
        _, vmax, vsum, count, n_tokens = row
        n = max(n_tokens, 1)
        return {"max": lambda: vmax, "sum": lambda: vsum, "mean": lambda: vsum / n, "count": lambda: count,
                "share": lambda: count / n, "binary": lambda: np.ones(len(vmax))}[self.pooling]().astype(np.float32)


def _texts(X: Iterable[str]) -> list[str]:
    if isinstance(X, str):
        raise UserError("SAEEncoder.transform takes a list of texts, not one string; wrap it: [text]")
    texts = list(X.tolist() if hasattr(X, "tolist") else X)
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise UserError(f"SAEEncoder.transform takes texts; item {bad} is a {type(texts[bad]).__name__}")
    return texts


__all__ = ["SAEEncoder", "POOLINGS"]
