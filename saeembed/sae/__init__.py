"""Sparse autoencoders: the module, checkpoint formats and spec resolution (training: :mod:`saeembed.train`)."""

from typing import Any

# torch loads on first use, so importing the package (e.g. for a spec's name) stays light.
_LAZY = {"SAEConfig": "model", "SAEShapeError": "model", "SparseAutoencoder": "model", "DEFAULT_SAE_DIR": "resolve",
         "LoadedSAE": "resolve", "open_sae": "resolve"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["SAEConfig", "SAEShapeError", "SparseAutoencoder", "open_sae", "LoadedSAE", "DEFAULT_SAE_DIR"]
