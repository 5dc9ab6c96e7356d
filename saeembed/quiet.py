"""Loading a model without the loader's own chatter: no "Loading weights" bar, no warnings.

Why: transformers draws a progress bar while a model loads; it ends without a newline, so on a
terminal it glues itself to the next line a command prints (the first row of a table).
saeembed's own progress (the encode bar) and messages are the ones that matter, always on stderr.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


@contextmanager
def quiet_model_loading() -> Iterator[None]:
    """transformers' progress bars off and its log at errors only, for the duration of a load."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # e.g. loading a CausalLM checkpoint into AutoModel reports the unused head
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


__all__ = ["quiet_model_loading"]
