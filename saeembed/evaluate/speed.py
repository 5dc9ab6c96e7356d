"""Encode speed of the pipeline against the bare truncated forward pass."""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

from .harness import Harness


# ------------------------------------------------------------------------------- speed ---------
def eval_speed(h: Harness, docs: int = 200, corpus: str = "amazon", repeats: int = 3) -> pl.DataFrame:
    """Encode tokens/s of the pipeline vs the bare truncated forward (the benchmark's own functions).

    Reads the corpus frame only (nothing is encoded into the store): the two timings must see the very
    same texts, and the store's copy of the corpus plays no part in either. The two timings alternate
    (``repeats`` pairs), so drift on a shared machine hits both alike; ``ratio`` is best against best and
    ``ratio low``/``ratio high`` the range of the per-pair ratios, which shows how noisy the run was
    (three back-to-back runs on the 2-core machine gave 0.89, 1.16 and 0.90 when timed in blocks).
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
        # wall clock, alternating; both rates count the same content tokens
        pairs = [(bare_forward(reader, sample, 256, 4096)[0], pipeline(reader, sample, h.sae, 256, 4096)[1])
                 for _ in range(max(1, repeats))]
    bare_s, pipe_s = min(b for b, _ in pairs), min(p for _, p in pairs)
    per_pair = [b / p for b, p in pairs]
    return pl.DataFrame([{"device": str(reader.device), "dtype": str(reader.dtype).replace("torch.", ""),
                          "threads": torch.get_num_threads(), "docs": docs, "bare forward tok/s": content / bare_s,
                          "pipeline tok/s": content / pipe_s, "ratio": bare_s / pipe_s,
                          "ratio low": min(per_pair), "ratio high": max(per_pair)}])
