"""Write an SAE as a Hugging Face repository folder that SAELens (and saeembed) load.

Layout (the one SAELens' own upload helper writes, so ``SAE.from_pretrained("you/repo", SAE_ID)``
and ``saeembed encode --sae hf:you/repo/SAE_ID`` both find it)::

    OUT/README.md                         model card (library_name: saelens, base model, metrics)
    OUT/SAE_ID/cfg.json                   SAELens 6.x keys plus the pre-6.0 ones
    OUT/SAE_ID/sae_weights.safetensors    W_enc, W_dec, b_enc, b_dec (+ threshold)
    OUT/SAE_ID/sparsity.safetensors       log10 firing density per latent (when labels carry it)
    OUT/SAE_ID/explanations.jsonl         the labels as Neuronpedia explanation rows (when any)

``SAE_ID`` defaults to the hook name (``blocks.18.hook_resid_post``). Upload the folder with
``hf upload you/repo OUT``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import torch

from ..errors import UserError
from ..fsutil import atomic_write_text
from ..labelrule import naming_labels, shown_labels
from .formats.saelens import save_saelens
from .resolve import open_sae

CARD = """---
library_name: saelens
tags:
- sparse-autoencoder
- saeembed
{base_model}---

# {title}

A sparse autoencoder on `{model}` ({hook}), {d_sae} latents, {activation}{k}, written by
[saeembed](https://pypi.org/project/saeembed/) in the SAELens layout.

Load it with SAELens:

```python
from sae_lens import SAE
sae = SAE.from_pretrained("<your-repo>", "{sae_id}")
```

or encode a corpus with it in saeembed:

```bash
saeembed encode corpus.parquet --store s.duckdb --sae hf:<your-repo>/{sae_id}
```

{metrics}{labels}"""


def _metrics_section(cfg_extra: dict[str, Any]) -> str:
    """The held-out metrics ``train-sae`` records in the checkpoint's config, as a table."""
    held = ((cfg_extra.get("saeembed") or {}).get("metrics") or {}).get("heldout") or {}
    rows = [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in held.items()]
    return ("## Held-out metrics\n\n| metric | value |\n|---|---|\n" + "\n".join(rows) + "\n\n") if rows else ""


def _labels_rows(labels: pl.DataFrame | None, model: str | None, layer: int | None, sae_id: str) -> list[dict]:
    if labels is None or labels.height == 0:
        return []
    keep = naming_labels(labels)  # labels only: a context row quotes a window, it names nothing
    return [{"modelId": model, "layer": f"{layer}-{sae_id}" if layer is not None else sae_id,
             "index": str(r["feature_id"]), "description": r["label"],
             "explanationModelName": r.get("label_source"),
             **({"scores": [r["score"]]} if r.get("score") is not None else {})}
            for r in keep.iter_rows(named=True)]


def export_sae(spec: str, out: str | Path, sae_id: str | None = None, overwrite: bool = False) -> Path:
    """Write the SAE named by ``spec`` (``default``, a path, ``hf:…``) as a hub folder at ``out``."""
    loaded = open_sae(spec)
    cfg = loaded.sae.cfg
    hook = cfg.hook_name or (f"blocks.{cfg.hook_layer}.hook_resid_post" if cfg.hook_layer is not None else None)
    sae_id = sae_id or hook or loaded.sae_id.split("@")[0]
    if "/" in sae_id or sae_id in (".", ".."):
        raise UserError(f"--sae-id {sae_id!r} must be one folder name; use e.g. blocks.18.hook_resid_post")
    out = Path(out)
    target = out / sae_id
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise UserError(f"{target} already holds files; pass --overwrite or another --out")
    save_saelens(loaded.sae, target, dtype=torch.float32)
    raw = json.loads((target / "cfg.json").read_text())
    raw.update({"device": "cpu", "reshape_activations": "none", "saeembed_id": loaded.sae_id})
    atomic_write_text(target / "cfg.json", json.dumps(raw, indent=2))
    labels = loaded.labels
    if labels is not None and "label_source" not in labels.columns:  # a hand-written labels.parquet
        labels = labels.with_columns(pl.lit(None, pl.String).alias("label_source"))
    # one density per latent, from its shown row (a latent ships a row per label source and a context)
    shown = shown_labels(labels) if labels is not None and "density" in labels.columns else None
    if shown is not None and shown["feature_id"].to_list() == list(range(cfg.d_sae)):
        from safetensors.torch import save_file

        dens = torch.tensor(shown["density"].fill_null(0.0).to_list(), dtype=torch.float32)
        save_file({"sparsity": torch.log10(dens.clamp_min(1e-10))}, str(target / "sparsity.safetensors"))
    rows = _labels_rows(labels, cfg.model_name, cfg.hook_layer, sae_id)
    if rows:
        atomic_write_text(target / "explanations.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n"
                                                                   for r in rows))
    card: dict[str, Any] = {
        "base_model": f"base_model: {cfg.model_name}\n" if cfg.model_name else "",
        "title": f"SAE {loaded.sae_id.split('@')[0]} on {cfg.model_name or 'a transformer'}",
        "model": cfg.model_name or "unknown", "hook": hook or "unknown hook", "d_sae": f"{cfg.d_sae:,}",
        "activation": cfg.activation, "k": f" (k={cfg.k})" if cfg.k else "", "sae_id": sae_id,
        "metrics": _metrics_section(raw),
        "labels": (f"## Labels\n\n`{sae_id}/explanations.jsonl` holds {len(rows):,} latent labels as Neuronpedia "
                   "explanation rows (`saeembed labels import` reads them).\n") if rows else "",
    }
    atomic_write_text(out / "README.md", CARD.format(**card))
    return out


__all__ = ["export_sae"]
