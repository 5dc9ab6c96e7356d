"""Load and save SAE checkpoints in the layouts researchers have on disk.

Every loader returns a shape-checked :class:`SparseAutoencoder`; nothing is half-loaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .model import SAEConfig, SAEShapeError, SparseAutoencoder

SAELENS_CFG = "cfg.json"
SAELENS_WEIGHTS = "sae_weights.safetensors"


class SAEFormatError(ValueError):
    """The path does not hold an SAE checkpoint in any layout we know."""


def _saelens_activation(cfg: dict[str, Any]) -> tuple[str, int | None]:
    """Map old (``activation_fn_str``) and new (``architecture``) SAELens keys to ours."""
    arch = str(cfg.get("architecture", "standard")).lower()
    act = str(cfg.get("activation_fn_str", cfg.get("activation_fn", "relu"))).lower()
    kwargs = cfg.get("activation_fn_kwargs") or {}
    k = cfg.get("k", kwargs.get("k"))
    if arch == "jumprelu":
        return "jumprelu", None
    if arch in ("topk", "batchtopk") or act == "topk":
        return ("batchtopk" if arch == "batchtopk" else "topk"), int(k) if k else None
    if arch not in ("standard", "relu"):
        raise SAEFormatError(
            f"SAELens architecture {arch!r} is not supported; supported: standard, topk, "
            "batchtopk, jumprelu"
        )
    return "relu", None


def _hook_layer_from_name(hook_name: str | None) -> int | None:
    if not hook_name:
        return None
    for part in hook_name.split("."):
        if part.isdigit():
            return int(part)
    return None


def load_saelens(path: str | Path) -> SparseAutoencoder:
    """SAELens layout: ``cfg.json`` + ``sae_weights.safetensors`` (old and new config keys)."""
    path = Path(path)
    cfg_path, w_path = path / SAELENS_CFG, path / SAELENS_WEIGHTS
    if not cfg_path.exists() or not w_path.exists():
        raise SAEFormatError(f"{path} is not an SAELens checkpoint (needs {SAELENS_CFG} and {SAELENS_WEIGHTS})")
    raw = json.loads(cfg_path.read_text())
    meta = raw.get("metadata") or {}
    activation, k = _saelens_activation(raw)
    hook_name = raw.get("hook_name", meta.get("hook_name"))
    hook_layer = raw.get("hook_layer", meta.get("hook_layer"))
    if hook_layer is None:
        hook_layer = _hook_layer_from_name(hook_name)
    try:
        cfg = SAEConfig(
            d_in=int(raw["d_in"]),
            d_sae=int(raw["d_sae"]),
            activation=activation,
            k=k,
            apply_b_dec_to_input=bool(raw.get("apply_b_dec_to_input", True)),
            model_name=raw.get("model_name", meta.get("model_name")),
            hook_layer=int(hook_layer) if hook_layer is not None else None,
            hook_name=hook_name,
            extra={key: raw[key] for key in ("saeembed",) if key in raw},
        )
    except KeyError as exc:
        raise SAEFormatError(f"{cfg_path} lacks the key {exc.args[0]!r}; it is not an SAELens config") from exc
    if str(raw.get("normalize_activations", "none")).lower() not in ("none", "", "null"):
        raise SAEFormatError(
            f"{cfg_path}: normalize_activations={raw['normalize_activations']!r} is not supported; "
            "fold the normalisation into the weights first"
        )
    sae = SparseAutoencoder(cfg)
    sae.load_tensors(load_file(str(w_path)))
    return sae.eval()


def save_saelens(sae: SparseAutoencoder, path: str | Path, dtype: torch.dtype = torch.float32) -> Path:
    """Write the SAELens layout (new-style keys plus the old ones, so both readers load it)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    c = sae.cfg
    arch = {"relu": "standard", "topk": "topk", "batchtopk": "batchtopk", "jumprelu": "jumprelu"}[c.activation]
    hook_name = c.hook_name or (f"blocks.{c.hook_layer}.hook_resid_post" if c.hook_layer is not None else None)
    cfg: dict[str, Any] = {
        "architecture": arch,
        "d_in": c.d_in,
        "d_sae": c.d_sae,
        "activation_fn_str": "topk" if c.activation in ("topk", "batchtopk") else "relu",
        "activation_fn_kwargs": {"k": c.k} if c.k else {},
        "apply_b_dec_to_input": c.apply_b_dec_to_input,
        "normalize_activations": "none",
        "model_name": c.model_name,
        "hook_name": hook_name,
        "hook_layer": c.hook_layer,
        "dtype": str(dtype).replace("torch.", ""),
        "metadata": {"model_name": c.model_name, "hook_name": hook_name, "hook_layer": c.hook_layer},
    }
    if c.k:
        cfg["k"] = c.k
    cfg.update(c.extra)
    tensors = {n: getattr(sae, n).detach().to(dtype).contiguous() for n in ("W_enc", "W_dec", "b_enc", "b_dec")}
    if sae.threshold is not None:
        tensors["threshold"] = sae.threshold.detach().to(dtype).contiguous()
    save_file(tensors, str(path / SAELENS_WEIGHTS))
    (path / SAELENS_CFG).write_text(json.dumps(cfg, indent=2))
    return path


def load_sae(path: str | Path) -> SparseAutoencoder:
    """Load a local checkpoint directory or file, detecting its layout."""
    path = Path(path)
    if not path.exists():
        raise SAEFormatError(f"SAE path {path} does not exist; pass a checkpoint directory or 'default'")
    if (path / SAELENS_CFG).exists() and (path / SAELENS_WEIGHTS).exists():
        return load_saelens(path)
    raise SAEFormatError(
        f"{path} holds no SAE checkpoint in a known layout (SAELens cfg.json + sae_weights.safetensors)"
    )


__all__ = ["SAEFormatError", "SAEShapeError", "load_sae", "load_saelens", "save_saelens"]
