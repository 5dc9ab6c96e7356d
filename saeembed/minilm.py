"""MiniLM's forward in NumPy, for the handful of texts a query embeds: no torch, no transformers.

Why: a search embeds one or a few phrases, and importing torch and transformers for that costs most
of a cold ``saeembed search`` (4.6 s of start-up on a quiet machine, 20-40 s on a loaded 2-core one),
while the forward of a short phrase itself takes milliseconds. This module reads the same files the torch
path loads (``tokenizer.json`` through the ``tokenizers`` library, ``model.safetensors`` through
``safetensors.numpy``) and computes the same BERT encoder (absolute positions, exact GELU, post-layer
norm) in float32; :class:`saeembed.embed.TextEmbedder` uses it for up to
:data:`~saeembed.embed.SMALL_BATCH` texts and torch for bulk work (documents, labels), where threads
and batching pay. ``tests/test_embed_light.py`` checks the vectors against transformers'.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np


def supported(model_dir: Path) -> bool:
    """Whether ``model_dir`` holds a plain BERT encoder this module computes exactly."""
    try:
        cfg = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return (cfg.get("model_type") == "bert" and cfg.get("hidden_act") == "gelu"
            and cfg.get("position_embedding_type", "absolute") == "absolute"
            and (model_dir / "tokenizer.json").exists() and (model_dir / "model.safetensors").exists())


class NumpyBert:
    """Mean-pooled, L2-normalised embeddings of a BERT encoder, one text at a time (no padding)."""

    def __init__(self, model_dir: Path, max_length: int = 256) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        cfg = json.loads((model_dir / "config.json").read_text())
        self.heads = int(cfg["num_attention_heads"])
        self.layers = int(cfg["num_hidden_layers"])
        self.eps = float(cfg.get("layer_norm_eps", 1e-12))
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length)
        raw = load_file(str(model_dir / "model.safetensors"))
        self.w = {k.removeprefix("bert."): v.astype(np.float32, copy=False) for k, v in raw.items()}
        self.dim = int(cfg["hidden_size"])

    def _ln(self, x: np.ndarray, name: str) -> np.ndarray:
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + self.eps) * self.w[f"{name}.weight"] + self.w[f"{name}.bias"]

    def _dense(self, x: np.ndarray, name: str) -> np.ndarray:
        return x @ self.w[f"{name}.weight"].T + self.w[f"{name}.bias"]

    def _one(self, ids: list[int]) -> np.ndarray:
        from scipy.special import erf

        w, n = self.w, len(ids)
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = self._ln(x, "embeddings.LayerNorm")
        d = x.shape[1] // self.heads
        for i in range(self.layers):
            p = f"encoder.layer.{i}"
            q, k, v = (self._dense(x, f"{p}.attention.self.{m}").reshape(n, self.heads, d).transpose(1, 0, 2)
                       for m in ("query", "key", "value"))
            scores = q @ k.transpose(0, 2, 1) / np.float32(np.sqrt(d))
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            ctx = (scores / scores.sum(-1, keepdims=True)) @ v
            x = self._ln(x + self._dense(ctx.transpose(1, 0, 2).reshape(n, -1), f"{p}.attention.output.dense"),
                         f"{p}.attention.output.LayerNorm")
            h = self._dense(x, f"{p}.intermediate.dense")
            h = h * 0.5 * (1.0 + erf(h / np.float32(np.sqrt(2.0))))
            x = self._ln(x + self._dense(h.astype(np.float32), f"{p}.output.dense"), f"{p}.output.LayerNorm")
        vec = x.mean(0)
        return vec / max(float(np.linalg.norm(vec)), 1e-12)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised embeddings [len(texts), dim] (mean over all tokens, [CLS] and [SEP] included)."""
        from threadpoolctl import threadpool_limits

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # one BLAS thread: products of a few rows gain nothing from threads, whose spinning on a
        # busy machine cost 20x the CPU time of the forward itself
        with threadpool_limits(1):
            for i, enc in enumerate(self.tokenizer.encode_batch(list(texts))):
                out[i] = self._one(enc.ids)
        return out


__all__ = ["NumpyBert", "supported"]
