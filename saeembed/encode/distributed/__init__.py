"""Scaling past one process: encoding on Ray (:mod:`.ray_encode`) over the atomic-shard protocol on
any ``pyarrow.fs`` storage (:mod:`.shards`). Ray is optional (``pip install 'saeembed[ray]'``) and
imported only when ``--ray``/``--devices`` is used."""

from __future__ import annotations

from typing import Any


def encode_corpus_ray(store_path: Any, corpus: Any, name: str, opts: Any) -> dict[str, Any]:
    from .ray_encode import encode_corpus_ray as run

    return run(store_path, corpus, name, opts)


__all__ = ["encode_corpus_ray"]
