"""Latent labels: files in and out (:mod:`.io`, :mod:`.parse`), the store's label rows
(:mod:`.catalog`), and search by meaning (:mod:`.search`).

Several sources may label one latent (a Neuronpedia explanation, an LLM label, the shipped offline
label); each is one row of ``features``, and analyses show the preferred one.
"""

from ..store.handle import as_store
from .catalog import LABEL_SCHEMA, labels_of, resolve_sae_id, write_labels
from .io import EXPORT_FORMATS, export_labels, import_labels, validate_labels
from .parse import parse_label_file
from .search import search_features

__all__ = ["import_labels", "export_labels", "parse_label_file", "validate_labels", "write_labels",
           "search_features", "resolve_sae_id", "labels_of", "as_store", "LABEL_SCHEMA", "EXPORT_FORMATS"]
