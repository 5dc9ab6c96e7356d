"""Turn an ``--sae`` spec into a loaded SAE plus the identity string recorded with corpora.

Specs: ``default`` (the SAE shipped in this package), or a local checkpoint directory/file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from ..errors import UserError
from .formats import SAEFormatError, load_sae
from .model import SAEShapeError, SparseAutoencoder

DEFAULT_SAE_DIR = Path(__file__).resolve().parent.parent / "data" / "default_sae"
LABELS_FILE = "labels.parquet"


@dataclass
class LoadedSAE:
    """An SAE with the identity that ties stored corpora to the exact weights that made them."""

    sae: SparseAutoencoder
    sae_id: str
    path: Path
    labels: pl.DataFrame | None


def _fingerprint(path: Path) -> str:
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and p.name != LABELS_FILE)
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:12]


def resolve_sae_path(spec: str) -> Path:
    """Local path for a spec (``default`` or a path)."""
    if spec in ("default", "", None):
        if not (DEFAULT_SAE_DIR / "cfg.json").exists():
            raise UserError("the default SAE is not installed with this package; pass --sae PATH")
        return DEFAULT_SAE_DIR
    path = Path(spec).expanduser()
    if not path.exists():
        raise UserError(f"SAE {spec!r} not found; pass 'default' or a checkpoint directory")
    return path


def open_sae(spec: str | None = "default") -> LoadedSAE:
    """Load and shape-check an SAE from a spec; errors are one-line :class:`UserError` s."""
    path = resolve_sae_path(spec or "default")
    try:
        sae = load_sae(path)
    except (SAEFormatError, SAEShapeError) as exc:
        raise UserError(str(exc)) from None
    labels_path = (path if path.is_dir() else path.parent) / LABELS_FILE
    labels = pl.read_parquet(labels_path) if labels_path.exists() else None
    base = "default" if path == DEFAULT_SAE_DIR else path.name
    return LoadedSAE(sae=sae, sae_id=f"{base}@{_fingerprint(path)}", path=path, labels=labels)
