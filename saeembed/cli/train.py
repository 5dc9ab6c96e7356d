"""``saeembed train-sae``: cache a reader's activations on corpora and train a TopK SAE on them.

The result is an SAELens checkpoint (``cfg.json`` + ``sae_weights.safetensors``) that
``saeembed encode --sae DIR`` reads, plus ``labels.parquet`` unless ``--no-labels``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click
import polars as pl

from ..errors import UserError
from ..options import cli_options, from_cli
from ..train.config import TrainConfig
from .output import emit


@click.command("train-sae", short_help="Train a TopK SAE on a reader's activations.")
@click.option("--corpus", "corpora", multiple=True, required=True,
              help="corpus file (parquet/csv/jsonl/txt); repeatable; PATH:COL names the text column")
@click.option("--text-col", "text_cols", multiple=True,
              help="text column, one per --corpus in order, or one for all (default: text, or the only string column)")
@click.option("--max-docs", type=int, help="sample at most this many documents per corpus")
@click.option("--max-chars", type=int,
              help="cut documents to this many characters (spreads tokens over more documents)")
@click.option("--reader", help="Hugging Face model id or local path (default: SmolLM2-135M-Instruct)")
@click.option("--layer", type=int, default=None,
              help="block whose output (resid_post) is read (default 18: the default SAE's layer, chosen by a "
                   "probe; a document-level reader such as minilm-doc reads its last block)")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="checkpoint directory to write")
@click.option("--cache", "cache", type=click.Path(file_okay=False),
              help="activation cache directory (default: OUT/.act_cache); reruns resume from it")
@click.option("--max-tokens", type=int, default=400_000, show_default=True, help="tokens to cache")
@click.option("--reader-dtype", "reader_dtype", default="auto", show_default=True,
              help="dtype of the reader while caching: auto (bf16 on GPU, fp32 on CPU), fp32, bf16; bf16 caches "
                   "about 3.5x faster on CPUs with AVX512-BF16 or AMX (benchmarks/cpu_bf16.py)")
@click.option("--labels/--no-labels", default=True, show_default=True, help="write offline labels.parquet")
@click.option("--push-layout", "push_layout", type=click.Path(file_okay=False),
              help="also write the trained SAE as a Hugging Face repository folder SAELens loads (model card, "
                   "SAE_ID/cfg.json, weights, labels); upload it with `hf upload you/repo DIR`")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="table: one metric per line; json: one object")
@cli_options(TrainConfig, exclude=("extra",))
def train_sae(corpora: tuple[str, ...], text_cols: tuple[str, ...], max_docs: int | None, max_chars: int | None,
              reader: str | None, layer: int | None, out: str, cache: str | None, max_tokens: int,
              reader_dtype: str, labels: bool,
              push_layout: str | None, fmt: str, **train_flags: Any) -> None:
    """Train a TopK SAE (with AuxK against dead latents) on a reader's activations over CORPUS files."""
    from ..reader import is_doc_reader
    from ..train import CorpusSpec, cache_activations, parse_corpus_spec, save_trained_sae, train_topk_sae

    doc_level = is_doc_reader(reader)
    if layer is None and not doc_level:
        layer = 18

    if text_cols and len(text_cols) not in (1, len(corpora)):
        raise UserError(f"pass one --text-col for all corpora or one per --corpus ({len(corpora)}), "
                        f"not {len(text_cols)}")
    specs: list[CorpusSpec] = []
    for i, c in enumerate(corpora):
        col = text_cols[0] if len(text_cols) == 1 else (text_cols[i] if text_cols else None)
        spec = parse_corpus_spec(c, col)
        if not Path(spec.path).exists():
            raise UserError(f"corpus file {spec.path} not found; check the --corpus path")
        spec.max_docs, spec.max_chars = max_docs, max_chars
        specs.append(spec)
    cfg = from_cli(TrainConfig, train_flags)
    if cfg.k <= 0 or cfg.d_sae <= cfg.k:
        raise UserError(f"need 0 < k < d_sae, got k={cfg.k}, d_sae={cfg.d_sae}")
    out_dir = Path(out)
    cache_dir = Path(cache) if cache else out_dir / ".act_cache"
    say = lambda m: click.echo(m, err=True)  # noqa: E731 - progress goes to stderr
    t0 = time.time()
    man = cache_activations(specs, cache_dir, reader=reader, layer=layer, device=cfg.device, max_tokens=max_tokens,
                            seed=cfg.seed, progress=say, dtype=reader_dtype)
    cache_s = time.time() - t0
    cfg.extra = {"cache_tokens": man["n_tokens"], "cache_wall_s": round(cache_s, 1)}
    sae, metrics = train_topk_sae(cache_dir, cfg, progress=say)
    save_trained_sae(sae, out_dir)
    if labels and doc_level:  # one vector per document: label by the words of its top documents
        from ..labels.doc_sae import label_doc_cache
        from ..labels.offline import write_labels

        write_labels(label_doc_cache(sae, cache_dir, specs), out_dir / "labels.parquet")
    elif labels:
        from ..labels.offline import label_latents, write_labels
        from ..reader.resolve import load_tokenizer
        from ..train import ActivationCache

        tok = load_tokenizer(reader)
        write_labels(label_latents(sae, ActivationCache(cache_dir), tok), out_dir / "labels.parquet")
    if push_layout:
        from ..sae.export import export_sae

        export_sae(str(out_dir), push_layout, overwrite=True)
        say(f"wrote the hub layout to {push_layout}")
    h = metrics["heldout"]
    row = {"out": str(out_dir), "reader": man["reader"], "layer": man["layer"], "d_sae": cfg.d_sae, "k": cfg.k,
           "tokens": man["n_tokens"], "train_tokens": metrics["train_tokens"], "steps": metrics["steps"],
           "heldout_fvu": h.get("fvu"), "heldout_l0": h.get("l0"), "heldout_dead_frac": h.get("dead_frac"),
           "train_dead_frac": metrics["train_dead_frac"], "cache_s": round(cache_s, 1),
           "train_s": metrics["train_wall_s"]}
    if fmt == "json":
        click.echo(json.dumps(row))
    else:
        fmt_v = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
        emit(pl.DataFrame({"metric": list(row), "value": [fmt_v(v) for v in row.values()]}), "table")
    sys.stdout.flush()


@click.command("export-sae", short_help="Write an SAE as a hub folder SAELens loads.")
@click.argument("spec")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="folder to write")
@click.option("--sae-id", help="folder name of the SAE inside the repo (default: its hook name, e.g. "
                               "blocks.18.hook_resid_post)")
@click.option("--overwrite", is_flag=True, help="replace an earlier export in the same folder")
def export_sae_cmd(spec: str, out: str, sae_id: str | None, overwrite: bool) -> None:
    """Write the SAE SPEC (default, a checkpoint path, hf:...) as a Hugging Face repository folder in the
    SAELens layout, with a model card and its labels as Neuronpedia explanations."""
    from ..sae.export import export_sae

    path = export_sae(spec, out, sae_id=sae_id, overwrite=overwrite)
    click.echo(f"wrote {path} (upload it with: hf upload YOU/REPO {path})", err=True)


COMMANDS = [train_sae, export_sae_cmd]
