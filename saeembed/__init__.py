"""saeembed: interpretable SAE embeddings of text corpora, stored in DuckDB.

Python entry point: :func:`open_store`. Every query returns a polars DataFrame. :class:`SAEEncoder`
gives SAE embeddings of texts inside scikit-learn pipelines (and BERTopic), without a store.
"""

from .api import Store, open_store
from .errors import UserError
from .report import report

__version__ = "0.1.0"


def show(df, store, **options):
    """Look at an analysis result: a :class:`saeembed.report.Report` that displays itself in Jupyter
    (charts, highlighted examples) and writes a self-contained HTML file with ``.save(path)``; the
    frame itself is unchanged (``.df``). Options: see :func:`saeembed.report.report`."""
    return report(df, store, **options)


def __getattr__(name: str):
    # SAEEncoder subclasses scikit-learn's estimator: imported on first use, so `import saeembed`
    # (and every CLI command) stays light
    if name == "SAEEncoder":
        from .encoder import SAEEncoder

        return SAEEncoder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Store", "open_store", "UserError", "show", "SAEEncoder", "__version__"]
