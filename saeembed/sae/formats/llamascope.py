"""Llama Scope (OpenMOSS ``lm_saes``): ``hyperparams.json`` + ``checkpoints/final.safetensors``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from ..model import SparseAutoencoder
from .common import (
    Format,
    SAEFormatError,
    build,
    check_native,
    dtype_name,
    hook_layer_from_name,
    load_safetensors,
    make_config,
    read_json,
    torch_load_tensors,
)

LLAMASCOPE_CFG = "hyperparams.json"
LLAMASCOPE_WEIGHTS = ("checkpoints/final.safetensors", "checkpoints/final.pt")


def load_llamascope(path: str | Path, overrides: dict[str, Any] | None = None) -> SparseAutoencoder:
    """Llama Scope: ``hyperparams.json`` + ``checkpoints/final.safetensors`` (lm_saes conventions).

    lm_saes encodes ``x' = x · f_in`` (``f_in = sqrt(d_model) / dataset_average_activation_norm.in``
    when ``norm_activation`` is ``dataset-wise``; 1 for ``inference``), optionally subtracts
    ``decoder.bias`` (``apply_decoder_bias_to_pre_encoder``), then ``pre = encoder(x')`` and
    JumpReLU ``pre · (pre > jump_relu_threshold)`` (no ReLU), TopK over ``relu(pre)``, or ReLU. The
    reconstruction is divided by ``f_out``. Both factors are folded into the weights here, so our
    module reproduces the latents on the raw residual stream. Token- or batch-wise normalisation
    cannot be folded and is refused.
    """
    path = Path(path)
    overrides = overrides or {}
    source = f"Llama Scope checkpoint {path}"
    hp = read_json(path / LLAMASCOPE_CFG)
    try:
        d_in, d_sae = int(hp["d_model"]), int(hp["d_sae"])
    except KeyError as exc:
        raise SAEFormatError(f"{path / LLAMASCOPE_CFG} lacks the key {exc.args[0]!r}; it is not a Llama "
                             "Scope hyperparams.json") from None
    hook_in, hook_out = hp.get("hook_point_in", hp.get("hook_point")), hp.get("hook_point_out")
    if hook_out is not None and hook_in is not None and hook_out != hook_in:
        raise SAEFormatError(f"{source} is a transcoder ({hook_in} → {hook_out}), not an SAE; use a "
                             "Llama Scope residual (R) SAE")
    hook_layer = overrides.get("hook_layer")
    if hook_layer is None:
        hook_layer = hook_layer_from_name(hook_in, source)

    tensors = _read_tensors(path, source)
    use_dec_bias = bool(hp.get("use_decoder_bias", True))
    expected = {"encoder.weight": (d_sae, d_in), "encoder.bias": (d_sae,), "decoder.weight": (d_in, d_sae)}
    if use_dec_bias:
        expected["decoder.bias"] = (d_in,)
    if "log_jumprelu_threshold" in tensors:
        expected["log_jumprelu_threshold"] = (d_sae,)
    check_native(tensors, expected, source, f"d_model={d_in}, d_sae={d_sae}")
    if hp.get("use_glu_encoder"):
        raise SAEFormatError(f"{source} uses a GLU encoder, which this loader does not support")

    W_enc = tensors["encoder.weight"].float().T.contiguous()
    b_enc = tensors["encoder.bias"].float()
    W_dec = tensors["decoder.weight"].float().T.contiguous()
    b_dec = tensors["decoder.bias"].float() if use_dec_bias else torch.zeros(d_in)
    activation, k, threshold = _activation(hp, tensors, W_dec, d_sae, source)
    f_in, f_out = _input_output_scales(hp, d_in, source)
    apply_bias = bool(hp.get("apply_decoder_bias_to_pre_encoder", False)) and use_dec_bias
    if apply_bias and not math.isclose(f_in, f_out, rel_tol=1e-6):
        raise SAEFormatError(f"{source}: subtracts decoder.bias before encoding with different in/out "
                             "norms, which one decoder bias cannot express")
    # encode: (x·f_in − b) W + c = (x − b/f_in)(f_in W) + c ; decode: (a W_dec + b)/f_out
    t = {"W_enc": W_enc * f_in, "b_enc": b_enc, "W_dec": W_dec / f_out, "b_dec": b_dec / f_out}
    if threshold is not None:
        t["threshold"] = threshold
    cfg = make_config(
        source, d_in=d_in, d_sae=d_sae, activation=activation, k=k,
        apply_b_dec_to_input=apply_bias,
        model_name=overrides.get("model_name") or hp.get("model_name") or "meta-llama/Llama-3.1-8B",
        hook_layer=hook_layer, hook_name=overrides.get("hook_name") or hook_in,
        dtype=dtype_name(tensors["encoder.weight"]),
        extra={"format": "llamascope", "input_scale": f_in, "output_scale": f_out},
    )
    return build(cfg, t)


def _read_tensors(path: Path, source: str) -> dict[str, torch.Tensor]:
    weights = next((path / w for w in LLAMASCOPE_WEIGHTS if (path / w).exists()), None)
    if weights is None:
        raise SAEFormatError(f"{source} has no {' or '.join(LLAMASCOPE_WEIGHTS)}; download the checkpoints/ folder too")
    if weights.suffix == ".safetensors":
        return load_safetensors(weights)
    state = torch_load_tensors(weights)
    return state.get("sae", state) if isinstance(state, dict) else {}


def _activation(hp: dict[str, Any], tensors: dict[str, torch.Tensor], W_dec: torch.Tensor, d_sae: int,
                source: str) -> tuple[str, int | None, torch.Tensor | None]:
    """(activation, k, threshold) from ``act_fn``: JumpReLU thresholds from the tensor or the config;
    TopK only when the ranking needs no decoder norms (lm_saes ranks by activation × ‖W_dec_i‖)."""
    act = str(hp.get("act_fn", "relu")).lower()
    if act == "jumprelu":
        if "log_jumprelu_threshold" in tensors:
            return "jumprelu", None, tensors["log_jumprelu_threshold"].float().exp()
        if hp.get("jump_relu_threshold") is not None:
            return "jumprelu", None, torch.full((d_sae,), float(hp["jump_relu_threshold"]))
        raise SAEFormatError(f"{source}: act_fn is jumprelu but neither jump_relu_threshold nor a "
                             "log_jumprelu_threshold tensor is present")
    if act == "topk":
        k = hp.get("top_k")
        if not k:
            raise SAEFormatError(f"{source}: act_fn is topk but top_k is missing from hyperparams.json")
        dec_norm = W_dec.norm(dim=1)
        unit = torch.allclose(dec_norm, torch.ones_like(dec_norm), atol=1e-3)
        if hp.get("sparsity_include_decoder_norm", True) and not unit:
            raise SAEFormatError(f"{source}: TopK ranks latents by activation × decoder norm and the "
                                 "decoder norms are not 1; this loader cannot reproduce that ranking")
        return "topk", int(k), None
    if act == "relu":
        return "relu", None, None
    raise SAEFormatError(f"{source}: act_fn {act!r} is not supported; supported: jumprelu, topk, relu")


def _input_output_scales(hp: dict[str, Any], d_in: int, source: str) -> tuple[float, float]:
    """(f_in, f_out) of ``norm_activation``: dataset-wise constants fold into the weights; per-token or
    per-batch norms cannot and are refused."""
    norm = str(hp.get("norm_activation", "inference")).lower()
    if norm == "inference":
        return 1.0, 1.0
    if norm == "dataset-wise":
        avg = hp.get("dataset_average_activation_norm") or {}
        if not isinstance(avg, dict) or avg.get("in") is None:
            raise SAEFormatError(f"{source}: norm_activation is dataset-wise but "
                                 "dataset_average_activation_norm.in is missing; add it to hyperparams.json")
        return math.sqrt(d_in) / float(avg["in"]), math.sqrt(d_in) / float(avg.get("out", avg["in"]))
    raise SAEFormatError(f"{source}: norm_activation={norm!r} rescales each token or batch by its own "
                         "norm, which cannot be folded into the weights; use a dataset-wise or "
                         "inference checkpoint")


def _claims_dir(path: Path) -> Path | None:
    return path if (path / LLAMASCOPE_CFG).is_file() else None


def _files(target: Path) -> list[Path]:
    weights = next((target / w for w in LLAMASCOPE_WEIGHTS if (target / w).exists()), None)
    return [target / LLAMASCOPE_CFG] + ([weights] if weights else [])


FORMAT = Format(
    name="llamascope", help="Llama Scope (hyperparams.json + checkpoints/final.safetensors)", load=load_llamascope,
    files=_files, claims_dir=_claims_dir, members=(LLAMASCOPE_CFG,),
)

__all__ = ['FORMAT', 'load_llamascope', 'LLAMASCOPE_CFG', 'LLAMASCOPE_WEIGHTS']
