"""Sparse autoencoders: the module, checkpoint formats, spec resolution and training."""

from .model import SAEConfig, SAEShapeError, SparseAutoencoder
from .resolve import DEFAULT_SAE_DIR, LoadedSAE, open_sae

__all__ = ["SAEConfig", "SAEShapeError", "SparseAutoencoder", "open_sae", "LoadedSAE", "DEFAULT_SAE_DIR"]
