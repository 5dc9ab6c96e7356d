"""saeembed: interpretable SAE embeddings of text corpora, stored in DuckDB.

Python entry point: :func:`open_store`. Every query returns a polars DataFrame.
"""

from .api import Store, open_store
from .errors import UserError

__version__ = "0.1.0"
__all__ = ["Store", "open_store", "UserError", "__version__"]
