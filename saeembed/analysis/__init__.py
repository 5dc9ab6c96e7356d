"""The four analyses over a store: diff, correlate, cluster, search (each returns polars frames).

Set operations run as named SQL from the repository's ``queries/`` folder; the rest (statistics,
NPMI via a sparse co-occurrence product, spectral/HDBSCAN clustering, rank fusion) is
numpy/scipy/sklearn on data fetched once.
"""

from .cluster import cluster
from .correlate import correlate
from .diff import diff
from .retrieve import search

__all__ = ["diff", "correlate", "cluster", "search"]
