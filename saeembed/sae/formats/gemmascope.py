"""Gemma Scope: ``params.npz`` (JumpReLU, Google DeepMind layout)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from ..model import SAEShapeError, SparseAutoencoder
from .common import (
    Format,
    SAEFormatError,
    build,
    check_native,
    dtype_name,
    make_config,
)

GEMMASCOPE_FILE = "params.npz"


_GEMMA_MODELS = {"2b-pt": "google/gemma-2-2b", "2b-it": "google/gemma-2-2b-it", "9b-pt": "google/gemma-2-9b",
                 "9b-it": "google/gemma-2-9b-it", "27b-pt": "google/gemma-2-27b", "27b-it": "google/gemma-2-27b-it"}

_GEMMA_REPO = re.compile(r"gemma-scope-(?P<size>\d+b)-(?P<kind>pt|it)-(?P<site>res|mlp|att|transcoders)", re.I)


def load_gemmascope(path: str | Path, overrides: dict[str, Any] | None = None) -> SparseAutoencoder:
    """Gemma Scope ``params.npz``: ``pre = x @ W_enc + b_enc``, ``a = relu(pre) * (pre > threshold)``.

    No decoder bias is subtracted from the input. Model, site and layer are read from the published
    path (``gemma-scope-2b-pt-res/layer_20/width_16k/...``) when it is there; MLP/attention sites
    and the embedding SAE are refused because the reader provides block outputs.
    """
    import numpy as np

    path = Path(path)
    overrides = overrides or {}
    file = path / GEMMASCOPE_FILE if path.is_dir() else path
    source = f"Gemma Scope checkpoint {file}"
    try:
        with np.load(file) as data:
            tensors = {("W_" + k[2:] if k.startswith("w_") else k): torch.from_numpy(np.asarray(data[k]).copy())
                       for k in data.files}
    except Exception as exc:  # noqa: BLE001 - numpy/zip raise many types
        raise SAEFormatError(f"cannot read {file} as a numpy .npz archive: {exc}") from None
    if "W_enc" not in tensors:
        raise SAEShapeError(f"{source} lacks tensor W_enc (has {', '.join(sorted(tensors))}); it is not a "
                            "Gemma Scope SAE")
    d_in, d_sae = (int(s) for s in tensors["W_enc"].shape)
    check_native(tensors, {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_in), "b_enc": (d_sae,),
                            "b_dec": (d_in,), "threshold": (d_sae,)},
                  source, f"d_in={d_in}, d_sae={d_sae} (from W_enc)")
    text = str(file.resolve())
    tail = "/".join(file.resolve().parts[-5:-1])  # layer_N/width_W/average_l0_K (+ repo) only
    if "embedding" in tail.lower():
        raise SAEFormatError(f"{source} is a Gemma Scope embedding SAE; the reader provides block "
                             "outputs, so use a layer_N residual SAE")
    model_name = hook_layer = hook_name = None
    repo = _GEMMA_REPO.search(text)
    if repo:
        if repo["site"].lower() != "res":
            raise SAEFormatError(f"{source} comes from the {repo['site']} site (not the residual stream); "
                                 "use a gemma-scope-*-res SAE")
        model_name = _GEMMA_MODELS.get(f"{repo['size'].lower()}-{repo['kind'].lower()}")
    layer = re.search(r"layer_(\d+)", tail)
    if layer:
        hook_layer = int(layer.group(1))
        hook_name = f"blocks.{hook_layer}.hook_resid_post"
    t = {n: tensors[n].float() for n in ("W_enc", "W_dec", "b_enc", "b_dec", "threshold")}
    # Reference: relu(pre) * (pre > threshold). Clamping the threshold at 0 makes our
    # pre * (pre > threshold) identical for any threshold (published ones are positive anyway).
    t["threshold"] = t["threshold"].clamp_min(0.0)
    hook_layer = overrides.get("hook_layer", hook_layer)
    cfg = make_config(
        source, d_in=d_in, d_sae=d_sae, activation="jumprelu", apply_b_dec_to_input=False,
        model_name=overrides.get("model_name") or model_name, hook_layer=hook_layer,
        hook_name=overrides.get("hook_name") or hook_name, dtype=dtype_name(tensors["W_enc"]),
        extra={"format": "gemmascope"},
    )
    return build(cfg, t)


def _claims_file(path: Path) -> Path | None:
    return path if path.name == GEMMASCOPE_FILE or path.suffix == ".npz" else None


def _claims_dir(path: Path) -> Path | None:
    return path / GEMMASCOPE_FILE if (path / GEMMASCOPE_FILE).is_file() else None


FORMAT = Format(
    name="gemmascope", help="Gemma Scope (params.npz)", load=load_gemmascope, files=lambda t: [t],
    claims_dir=_claims_dir, claims_file=_claims_file,
)

__all__ = ['FORMAT', 'load_gemmascope', 'GEMMASCOPE_FILE']
