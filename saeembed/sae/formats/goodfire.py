"""Goodfire: one ``*.pth`` state dict (``encoder_linear`` / ``decoder_linear``), read with ``weights_only=True``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..model import SparseAutoencoder
from .common import (
    Format,
    SAEFormatError,
    build,
    check_native,
    dtype_name,
    make_config,
    torch_load_tensors,
)

GOODFIRE_SUFFIXES = (".pth", ".pt")


_GOODFIRE_NAME = re.compile(r"^(?P<model>.+?)-SAE-l(?P<layer>\d+)$", re.IGNORECASE)


def load_goodfire(path: str | Path, overrides: dict[str, Any] | None = None) -> SparseAutoencoder:
    """Goodfire ``.pth`` state dict: ``relu(x @ encoder_linear.weight.T + encoder_linear.bias)``.

    Goodfire does not subtract the decoder bias before encoding. The model and layer come from the
    published file name (``Llama-3.1-8B-Instruct-SAE-l19.pth`` → meta-llama/Llama-3.1-8B-Instruct,
    block 19's output), since the file itself carries no metadata.
    """
    path = Path(path)
    overrides = overrides or {}
    source = f"Goodfire checkpoint {path}"
    state = torch_load_tensors(path)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or "encoder_linear.weight" not in state:
        keys = ", ".join(sorted(map(str, state))) if isinstance(state, dict) else type(state).__name__
        raise SAEFormatError(f"{path} is not a Goodfire SAE (expected encoder_linear.weight, "
                             f"decoder_linear.weight; found {keys})")
    d_sae, d_in = (int(s) for s in state["encoder_linear.weight"].shape)
    check_native(state, {"encoder_linear.weight": (d_sae, d_in), "encoder_linear.bias": (d_sae,),
                          "decoder_linear.weight": (d_in, d_sae), "decoder_linear.bias": (d_in,)},
                  source, f"d_in={d_in}, d_sae={d_sae} (from encoder_linear.weight)")
    m = _GOODFIRE_NAME.match(path.stem)
    model_name = hook_layer = None
    if m:
        model_name = m["model"]
        if model_name.lower().startswith("llama") and "/" not in model_name:
            model_name = f"meta-llama/{model_name}"
        hook_layer = int(m["layer"])
    t = {"W_enc": state["encoder_linear.weight"].float().T.contiguous(),
         "b_enc": state["encoder_linear.bias"].float(),
         "W_dec": state["decoder_linear.weight"].float().T.contiguous(),
         "b_dec": state["decoder_linear.bias"].float()}
    hook_layer = overrides.get("hook_layer", hook_layer)
    cfg = make_config(
        source, d_in=d_in, d_sae=d_sae, activation="relu", apply_b_dec_to_input=False,
        model_name=overrides.get("model_name") or model_name, hook_layer=hook_layer,
        hook_name=overrides.get("hook_name") or (f"model.layers.{hook_layer}" if hook_layer is not None else None),
        dtype=dtype_name(state["encoder_linear.weight"]), extra={"format": "goodfire"},
    )
    return build(cfg, t)


def _claims_file(path: Path) -> Path | None:
    return path if path.suffix in GOODFIRE_SUFFIXES and path.parent.name != "checkpoints" else None


def _claims_dir(path: Path) -> Path | None:
    pths = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in GOODFIRE_SUFFIXES)
    if len(pths) > 1:
        raise SAEFormatError(f"{path} holds several .pth files ({', '.join(p.name for p in pths)}); "
                             "pass the one you want")
    return pths[0] if pths else None


FORMAT = Format(
    name="goodfire", help="Goodfire (*.pth)", load=load_goodfire, files=lambda t: [t],
    claims_dir=_claims_dir, claims_file=_claims_file,
)

__all__ = ['FORMAT', 'load_goodfire', 'GOODFIRE_SUFFIXES']
