"""The four analyses over a store: diff, correlate, cluster, search (each returns a polars frame).

Set operations run as named SQL from the repository's ``queries/`` folder (one documented file per
query, so users can read and reuse exactly what runs); the rest (statistics, NPMI via a sparse
co-occurrence product, spectral/HDBSCAN clustering, rank fusion) is numpy/scipy/sklearn on the
selected latents only. Each analysis takes its options as one dataclass (:mod:`.options`) or as
keywords. The optional LLM step of diffing lives in
:func:`saeembed.analysis.hypotheses.diff_hypotheses` (imported on demand: it needs the reader).
"""

from typing import Any

from .options import ClusterOptions, CorrelateOptions, DiffOptions, SearchOptions

# The analyses load numpy/scipy/sklearn code on first use, so `import saeembed.cli` stays light.
_LAZY = {"cluster": "cluster", "cluster_assignments": "cluster", "correlate": "correlate", "diff": "diff",
         "search": "retrieve"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["diff", "correlate", "cluster", "cluster_assignments", "search", "DiffOptions", "CorrelateOptions",
           "ClusterOptions", "SearchOptions"]
