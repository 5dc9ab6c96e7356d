"""The four analyses over a store: diff, correlate, cluster, search (each returns a polars frame).

Set operations run as named SQL from the repository's ``queries/`` folder (one documented file per
query, so users can read and reuse exactly what runs); the rest (statistics, NPMI via a sparse
co-occurrence product, spectral/HDBSCAN clustering, rank fusion) is numpy/scipy/sklearn on the
selected latents only. Each analysis takes its options as one dataclass (:mod:`.options`) or as
keywords. The optional LLM step of diffing lives in
:func:`saeembed.analysis.hypotheses.diff_hypotheses` (imported on demand: it needs the reader).
"""

from .cluster import cluster, cluster_assignments
from .correlate import correlate
from .diff import diff
from .options import ClusterOptions, CorrelateOptions, DiffOptions, SearchOptions
from .retrieve import search

# Eager: the functions share their modules' names, so a lazy ``__getattr__`` returned the submodule
# (``from saeembed.analysis import cluster``) once ``saeembed.analysis.cluster`` had been imported.

__all__ = ["diff", "correlate", "cluster", "cluster_assignments", "search", "DiffOptions", "CorrelateOptions",
           "ClusterOptions", "SearchOptions"]
