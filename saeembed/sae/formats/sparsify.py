"""EleutherAI sparsify: ``cfg.json`` + ``sae.safetensors`` per hookpoint folder (``ROOT#layers.N``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..model import SAEShapeError, SparseAutoencoder
from .common import (
    SAELENS_CFG,
    Format,
    SAEFormatError,
    build,
    check_native,
    dtype_name,
    hook_layer_from_name,
    load_safetensors,
    make_config,
    read_json,
)

SPARSIFY_WEIGHTS = "sae.safetensors"


def load_sparsify(path: str | Path, overrides: dict[str, Any] | None = None) -> SparseAutoencoder:
    """EleutherAI sparsify hookpoint directory: ``cfg.json`` + ``sae.safetensors``.

    sparsify encodes ``topk(relu(encoder(x - b_dec)))`` with ``encoder.weight`` [d_sae, d_in] and
    decodes with ``W_dec`` [d_sae, d_in] + ``b_dec``. ``d_in`` comes from cfg.json (sparsify writes
    it there), else the run root's config.json, else the tensors. The hookpoint is the directory
    name (``layers.N`` = block N's output).
    """
    path = Path(path)
    overrides = overrides or {}
    source = f"sparsify checkpoint {path}"
    raw = read_json(path / SAELENS_CFG)
    root_cfg = read_json(path.parent / "config.json") if (path.parent / "config.json").is_file() else {}
    if raw.get("transcode"):
        raise SAEFormatError(f"{source} is a transcoder (transcode=true), not an SAE; its latents "
                             "describe an MLP, not the residual stream")
    activation = str(raw.get("activation", "topk")).lower()
    if activation != "topk":
        raise SAEFormatError(f"{source}: activation {activation!r} is not supported; sparsify TopK "
                             "SAEs are")
    k = raw.get("k")
    if not k:
        raise SAEFormatError(f"{source}: cfg.json lacks k (latents per token); add it")
    tensors = load_safetensors(path / SPARSIFY_WEIGHTS)
    if "encoder.weight" not in tensors:
        raise SAEShapeError(f"{source} lacks tensor encoder.weight (has {', '.join(sorted(tensors))}); "
                            "it is not a sparsify SAE")
    d_in = raw.get("d_in") or root_cfg.get("d_in") or int(tensors["encoder.weight"].shape[1])
    d_in = int(d_in)
    d_sae = raw.get("num_latents") or (d_in * int(raw["expansion_factor"]) if raw.get("expansion_factor") else None)
    d_sae = int(d_sae) if d_sae else int(tensors["encoder.weight"].shape[0])
    check_native(tensors, {"encoder.weight": (d_sae, d_in), "encoder.bias": (d_sae,),
                            "W_dec": (d_sae, d_in), "b_dec": (d_in,)},
                  source, f"d_in={d_in}, num_latents={d_sae}")
    hook_name = overrides.get("hook_name") or path.name
    hook_layer = overrides.get("hook_layer")
    if hook_layer is None and hook_name.startswith(("layers.", "layer", "h.", "blocks.", "model.")):
        hook_layer = hook_layer_from_name(hook_name, source)  # layers.N: block N's output
    t = {"W_enc": tensors["encoder.weight"].float().T.contiguous(), "b_enc": tensors["encoder.bias"].float(),
         "W_dec": tensors["W_dec"].float(), "b_dec": tensors["b_dec"].float()}
    extra: dict[str, Any] = {"format": "sparsify"}
    if "W_skip" in tensors:
        extra["decode_ignores_W_skip"] = True  # latents are exact; reconstructions omit the skip term
    cfg = make_config(
        source, d_in=d_in, d_sae=d_sae, activation="topk", k=int(k), apply_b_dec_to_input=True,
        model_name=overrides.get("model_name") or root_cfg.get("model") or raw.get("model"),
        hook_layer=hook_layer, hook_name=hook_name, dtype=dtype_name(tensors["encoder.weight"]), extra=extra,
    )
    return build(cfg, t)


def _sparsify_hookpoints(path: Path) -> list[str]:
    if not path.is_dir():
        return []
    return sorted((d.name for d in path.iterdir()
                   if d.is_dir() and (d / SAELENS_CFG).is_file() and (d / SPARSIFY_WEIGHTS).is_file()),
                  key=lambda n: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", n)])


def _claims_dir(path: Path) -> Path | None:
    return path if (path / SAELENS_CFG).is_file() and (path / SPARSIFY_WEIGHTS).is_file() else None


def root_hint(path: Path) -> None:
    """Refuse a sparsify run root (several hookpoints) with the spec that picks one."""
    hookpoints = _sparsify_hookpoints(path)
    if hookpoints:
        shown = ", ".join(hookpoints[:6]) + (", ..." if len(hookpoints) > 6 else "")
        raise SAEFormatError(f"{path} is a sparsify checkpoint root with {len(hookpoints)} hookpoints "
                             f"({shown}); pick one with --sae '{path}#{hookpoints[0]}'")


FORMAT = Format(
    name="sparsify", help="sparsify (cfg.json + sae.safetensors)", load=load_sparsify,
    files=lambda t: [t / SAELENS_CFG, t / SPARSIFY_WEIGHTS], claims_dir=_claims_dir, members=(SPARSIFY_WEIGHTS,),
)

__all__ = ['FORMAT', 'load_sparsify', 'SPARSIFY_WEIGHTS']
