"""Where the SAEs shipped in the package live (no torch: label search reads their files too)."""

from __future__ import annotations

from pathlib import Path

DEFAULT_SAE_DIR = Path(__file__).resolve().parent.parent / "data" / "default_sae"
# the document-level SAE (on MiniLM document embeddings, saeembed.reader.doc): ``--sae doc``
DOC_SAE_DIR = Path(__file__).resolve().parent.parent / "data" / "doc_sae"
SHIPPED = {"default": DEFAULT_SAE_DIR, "doc": DOC_SAE_DIR}
LABELS_FILE = "labels.parquet"

__all__ = ["DEFAULT_SAE_DIR", "DOC_SAE_DIR", "SHIPPED", "LABELS_FILE"]
