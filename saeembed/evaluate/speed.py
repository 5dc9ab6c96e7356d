"""Encode speed of the pipeline against the bare truncated forward pass."""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

from .harness import Harness


# ------------------------------------------------------------------------------- speed ---------
def eval_speed(h: Harness, docs: int = 200, corpus: str = "amazon") -> pl.DataFrame:
    """Encode tokens/s of the pipeline vs the bare truncated forward (the benchmark's own functions).

    Reads the corpus frame only (nothing is encoded into the store): the two timings must see the very
    same texts, and the store's copy of the corpus plays no part in either.
    """
    import tempfile

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from encode_throughput import bare_forward, pipeline, token_counts  # type: ignore[import-not-found]

    reader = h.reader()
    with tempfile.TemporaryDirectory() as tmp:
        sample = Path(tmp) / "sample.parquet"
        h.frame(corpus).head(docs).select("text").write_parquet(sample)
        content = token_counts(reader, sample, 256, 4096)["content"]
        bare_forward(reader, sample, 256, 4096)  # warm-up
        # best of two each, wall clock; both rates count the same content tokens
        bare_s = min(bare_forward(reader, sample, 256, 4096)[0] for _ in range(2))
        pipe_s = min(pipeline(reader, sample, h.sae, 256, 4096)[1] for _ in range(2))
    return pl.DataFrame([{"device": str(reader.device), "dtype": str(reader.dtype).replace("torch.", ""),
                          "threads": torch.get_num_threads(), "docs": docs, "bare forward tok/s": content / bare_s,
                          "pipeline tok/s": content / pipe_s, "ratio": bare_s / pipe_s}])
