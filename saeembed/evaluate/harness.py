"""Encodes the corpora a task needs (once, resumable) into the evaluation store."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ..encode import encode_corpus
from ..store.handle import open_store
from .tasks import CORPORA


# ------------------------------------------------------------------------------- encoding ------
class Harness:
    """Encodes the corpora a task needs (once, resumable) and runs the analyses on them."""

    def __init__(self, store: Path, data: Path, docs: int, sae: str = "default", suffix: str = "",
                 share: Harness | None = None, loaded_reader: Any = None) -> None:
        """``share``: a harness whose store (and corpus frames) this one uses too, storing its corpora as
        ``<name><suffix>`` — another SAE over the very same documents in the same store, as a user
        would keep them to fuse the two (``search --fuse``). ``loaded_reader``: a reader already in
        memory, cut at the SAE's layer (saves loading the model again)."""
        self.store_path, self.data, self.docs, self.sae, self.suffix = store, data, docs, sae, suffix
        self.work = share.work if share is not None else store.parent / (store.stem + ".corpora")
        self.work.mkdir(parents=True, exist_ok=True)
        self._reader = loaded_reader
        self.store = share.store if share is not None else open_store(store)
        self.encode_s: dict[str, float] = {}

    def stored(self, name: str) -> str:
        """The name the evaluation corpus ``name`` has in the store."""
        return name + self.suffix

    def reader(self):
        if self._reader is None:
            from ..reader import make_reader
            from ..sae import open_sae

            cfg = open_sae(self.sae).sae.cfg
            self._reader = make_reader(cfg.model_name, layer=cfg.hook_layer)
        return self._reader

    def frame(self, name: str) -> pl.DataFrame:
        """The corpus as written for encoding; its row order is the documents' row_idx."""
        return pl.read_parquet(self.corpus_path(name))

    def corpus_path(self, name: str, frame: pl.DataFrame | None = None) -> Path:
        path = self.work / f"{name}.parquet"
        if not path.exists():
            if frame is None:
                spec = CORPORA[name]
                src = self.data / spec.dataset / "data.parquet"
                if not src.exists():
                    raise SystemExit(f"error: dataset {src} not found; pass --data DIR (the shared datasets folder)")
                frame = spec.build(pl.read_parquet(src), self.docs)
            frame.write_parquet(path)
        return path

    def ensure(self, name: str, frame: pl.DataFrame | None = None) -> str:
        known = set(self.store.corpora()["name"].to_list()) if self.store_path.exists() else set()
        stored = self.stored(name)
        if stored not in known:
            self.store.close()
            t0 = time.perf_counter()
            encode_corpus(self.store_path, self.corpus_path(name, frame), stored, text_col="text", sae=self.sae,
                          loaded_reader=self.reader(), progress=True)
            self.encode_s[stored] = time.perf_counter() - t0
        return stored

    def doc_ids(self, name: str) -> np.ndarray:
        """doc_id of every row of the corpus frame (rows dropped as empty get −1)."""
        docs = self.store.documents(self.stored(name)).select("doc_id", "row_idx")
        n = self.frame(name).height
        out = np.full(n, -1, dtype=np.int64)
        out[docs["row_idx"].to_numpy()] = docs["doc_id"].to_numpy()
        return out
