"""Encode speed of the pipeline against the bare truncated forward pass."""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

from .harness import Harness


# ------------------------------------------------------------------------------- speed ---------
def eval_speed(h: Harness, docs: int = 200) -> pl.DataFrame:
    """Encode tokens/s of the pipeline vs the bare truncated forward (the benchmark's own functions)."""
    import tempfile

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from encode_throughput import bare_forward, pipeline  # type: ignore[import-not-found]

    reader = h.reader()
    with tempfile.TemporaryDirectory() as tmp:
        sample = Path(tmp) / "sample.parquet"
        h.frame(h.ensure("amazon")).head(docs).select("text").write_parquet(sample)
        bare_forward(reader, sample, "text", 256, 4096)
        bare = max((bare_forward(reader, sample, "text", 256, 4096) for _ in range(2)), key=lambda r: r[0] / r[1])
        pipe = max((pipeline(reader, sample, "text", h.sae, 256, 4096) for _ in range(2)), key=lambda r: r[0] / r[1])
    bare_tps = bare[0] / bare[1]
    pipe_tps = pipe[0] / pipe[1] * bare[0] / max(pipe[0], 1)  # same forwarded-token count for both
    return pl.DataFrame([{"device": str(reader.device), "dtype": str(reader.dtype).replace("torch.", ""),
                          "threads": torch.get_num_threads(), "docs": docs, "bare forward tok/s": bare_tps,
                          "pipeline tok/s": pipe_tps, "ratio": pipe_tps / bare_tps}])
