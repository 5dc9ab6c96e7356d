"""The options of an encode, defined once for ``encode_corpus``/``Store.encode`` and ``saeembed encode``.

Light on purpose (no torch import), so the CLI builds its help without loading models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..options import option


@dataclass
class EncodeOptions:
    """How a corpus is read, which reader/SAE encode it, and how the work is cut."""

    text_col: str | None = option(None, "column holding the document text (default: the first of text, document, "
                                        "content, output, response, body, else the only string column)")
    messages_col: str | None = option(None, "column holding chat messages [{role, content}] instead of plain text")
    where: str | None = option(None, "keep only the source rows for which this SQL condition holds (DuckDB, over the "
                                     "source's columns), e.g. \"generator = 'gpt4_1106_preview'\"")
    reader: str | None = option(None, "Hugging Face model id or local path (default: the SAE's reader, "
                                      "SmolLM2-135M-Instruct for the default SAE)")
    layer: int | None = option(None, "block whose output (resid_post) the SAE reads (default: the SAE's)", min=0)
    sae: str = option("default", "SAE spec: default, a checkpoint directory, hf:OWNER/REPO/PATH or "
                                 "saelens:RELEASE/SAE_ID")
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    dtype: str = option("auto", "auto (bf16 on GPU, fp32 on CPU), fp32, bf16 or fp16",
                        choices=("auto", "fp32", "float32", "bf16", "bfloat16", "fp16", "float16"))
    chat_template: bool | None = option(None, "wrap each document as one assistant message (default: on when the "
                                              "reader has a template)", "--chat-template/--no-chat-template")
    include_special: bool = option(False, "also pool template/special tokens (off: they fire the same latents in "
                                          "every document and pollute the max-pool)")
    window: int | None = option(None, "tokens per window; longer documents are split and max-pooled across "
                                      "windows (default: min(context, 1024))", min=1)
    prefix_cache: bool = option(True, "causal readers: compute the shared template prefix once and reuse its "
                                      "key/value cache, and skip the template tokens after the content (exact; "
                                      "--no-prefix-cache runs the full forward)", "--prefix-cache/--no-prefix-cache")
    batch_tokens: int = option(4096, "padded tokens per forward batch", min=1)
    shard_docs: int = option(256, "documents per crash-safe shard", min=1)
    drop_empty: bool = option(False, "skip rows with empty or null text instead of refusing the corpus")
    limit: int | None = option(None, "encode only the first N rows", min=1)
    wait: float | None = option(None, "seconds to wait for other processes to release the store (default: "
                                      "SAEEMBED_WAIT or 120)", min=0.0)
    progress: bool = option(True, "show a progress bar on stderr (--quiet: none)", "--progress/--quiet")
    keep: str = option("duckdb", "where the activations are kept: duckdb (copied into the store file) or parquet "
                                 "(sorted Parquet files next to the store, registered and read in place)",
                       choices=("duckdb", "parquet"))
    parquet_dir: str | None = option(None, "with --keep parquet: folder for the corpus' Parquet files, on storage "
                                           "every reader of the store sees (default: STORE.parquet/)")
    ray: str | None = option(None, "encode on Ray: auto (attach to a running cluster, else start a local one) or "
                                   "the cluster ADDRESS (host:port or ray://host:port); needs saeembed[ray]")
    ray_workers: int | None = option(None, "with --ray: number of reader+SAE actors (default: one per GPU, or one "
                                           "per CPU slot when the cluster has no GPU)", min=1)
    devices: str | None = option(None, "several devices on this machine through a local Ray cluster: "
                                       "cuda:0,cuda:1,... | all | cpu,cpu (one actor per entry)")
    work_dir: str | None = option(None, "with --ray/--devices: folder or URI (file://, s3://, gs://, any that "
                                        "pyarrow.fs accepts) for the unfinished shards, on storage every node "
                                        "sees (default: STORE.work/)")
    loaded_reader: Any = option(None, "an already loaded saeembed.reader.Reader to reuse (Python only)", cli=False)


__all__ = ["EncodeOptions"]
