"""SAELens layout: ``cfg.json`` + ``sae_weights.safetensors`` (pre-6.0 and 6.x config keys)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..model import SparseAutoencoder
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

SAELENS_WEIGHTS = "sae_weights.safetensors"


def _saelens_activation(cfg: dict[str, Any], source: str = "SAELens config") -> tuple[str, int | None]:
    """Map old (``activation_fn_str``/``activation_fn_kwargs``) and 6.x (``architecture``, ``k``) keys."""
    arch = str(cfg.get("architecture") or "standard").lower()
    act = str(cfg.get("activation_fn_str", cfg.get("activation_fn")) or "relu").lower()
    kwargs = cfg.get("activation_fn_kwargs") or {}
    k = cfg.get("k", kwargs.get("k"))
    if arch in ("jumprelu", "jumprelu_skip_transcoder"):
        if arch != "jumprelu":
            raise SAEFormatError(f"{source}: architecture {arch!r} is a transcoder, not an SAE")
        return "jumprelu", None
    if arch in ("topk", "batchtopk") or act == "topk":
        if not k:
            raise SAEFormatError(f"{source}: a {arch if arch != 'standard' else 'topk'} SAE needs k "
                                 "(top-level 'k' or activation_fn_kwargs.k); add it to cfg.json")
        return ("batchtopk" if arch == "batchtopk" else "topk"), int(k)
    if arch == "gated":
        raise SAEFormatError(
            f"{source}: gated SAEs are not supported (their gate and magnitude paths need weights our "
            "module does not have); use a standard, topk, batchtopk or jumprelu SAE"
        )
    if arch not in ("standard", "relu"):
        raise SAEFormatError(
            f"{source}: SAELens architecture {arch!r} is not supported; supported: standard, topk, "
            "batchtopk, jumprelu"
        )
    if act not in ("relu",):
        raise SAEFormatError(f"{source}: activation {act!r} is not supported for a standard SAE; "
                             "supported: relu, topk")
    return "relu", None


def _saelens_scaling(raw: dict[str, Any], overrides: dict[str, Any], source: str) -> float | None:
    """Input scale for ``normalize_activations``; None when inputs are used as they are.

    ``expected_average_only_in`` multiplies inputs by a constant; SAELens folds it into the weights
    from ``norm_scaling_factor`` (its registry, or the config). Per-token norms
    (``constant_norm_rescale``, ``layer_norm``) cannot be folded into a linear encoder.
    """
    norm = raw.get("normalize_activations", "none")
    if isinstance(norm, bool):  # pre-6.0 booleans
        norm = "expected_average_only_in" if norm else "none"
    norm = str(norm if norm is not None else "none").lower()
    if norm in ("none", "", "null"):
        return None
    if norm == "expected_average_only_in":
        factor = overrides.get("norm_scaling_factor", raw.get("norm_scaling_factor"))
        if factor is None:
            raise SAEFormatError(
                f"{source}: normalize_activations='expected_average_only_in' but no norm_scaling_factor "
                "is given; add \"norm_scaling_factor\": <float> to cfg.json (SAELens lists it per SAE)"
            )
        return float(factor)
    raise SAEFormatError(
        f"{source}: normalize_activations={norm!r} rescales every token by its own norm, which this "
        "loader does not support; use an SAE with normalize_activations 'none' or "
        "'expected_average_only_in'"
    )


def load_saelens(path: str | Path, overrides: dict[str, Any] | None = None) -> SparseAutoencoder:
    """SAELens layout: ``cfg.json`` + ``sae_weights.safetensors``.

    Reads pre-6.0 keys (``activation_fn_str``, ``activation_fn_kwargs.k``, ``hook_point``,
    ``hook_point_layer``) and 6.x keys (``architecture``, top-level ``k``, ``metadata.model_name``,
    ``metadata.hook_name``). Folds ``expected_average_only_in`` scaling and 6.x TopK
    ``rescale_acts_by_decoder_norm`` into the weights, exactly as SAELens does at inference.
    """
    path = Path(path)
    overrides = overrides or {}
    cfg_path, w_path = path / SAELENS_CFG, path / SAELENS_WEIGHTS
    if not cfg_path.exists() or not w_path.exists():
        raise SAEFormatError(f"{path} is not an SAELens checkpoint (needs {SAELENS_CFG} and {SAELENS_WEIGHTS})")
    raw = read_json(cfg_path)
    source = f"SAELens checkpoint {path}"
    meta = raw.get("metadata") or raw.get("meta") or {}
    activation, k = _saelens_activation(raw, source)
    if raw.get("hook_head_index", meta.get("hook_head_index")) is not None:
        raise SAEFormatError(f"{source} reads a single attention head (hook_head_index); use a "
                             "residual-stream SAE")
    hook_name = overrides.get("hook_name") or raw.get("hook_name") or raw.get("hook_point") or meta.get("hook_name")
    hook_layer = overrides.get("hook_layer", raw.get("hook_layer", raw.get("hook_point_layer", meta.get("hook_layer"))))
    from_name = hook_layer_from_name(hook_name, source)
    if hook_layer is None:
        hook_layer = from_name
    elif "hook_resid_pre" in str(hook_name or ""):
        hook_layer = from_name  # SAELens records N for blocks.N.hook_resid_pre; we count block outputs
    scale = _saelens_scaling(raw, overrides, source)
    try:
        d_in, d_sae = int(raw["d_in"]), int(raw["d_sae"])
    except KeyError as exc:
        raise SAEFormatError(f"{cfg_path} lacks the key {exc.args[0]!r}; it is not an SAELens config") from None
    tensors = load_safetensors(w_path)
    if "threshold" not in tensors and "log_threshold" in tensors:
        tensors["threshold"] = tensors.pop("log_threshold").float().exp()
    if "scaling_factor" in tensors and not torch.allclose(tensors["scaling_factor"].float(), torch.tensor(1.0)):
        raise SAEFormatError(f"{source} has a fine-tuning scaling_factor tensor (not all ones), which "
                             "this loader does not apply; fold it into W_dec first")
    expected = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_in), "b_enc": (d_sae,), "b_dec": (d_in,)}
    if activation == "jumprelu":
        expected["threshold"] = (d_sae,)
    check_native(tensors, expected, source, f"d_in={d_in}, d_sae={d_sae}")
    t = {n: tensors[n].float() for n in expected}
    if activation == "jumprelu":
        # SAELens computes relu(pre) * (pre > threshold); with threshold clamped at 0 that equals our
        # pre * (pre > threshold) for every threshold, negative ones included.
        t["threshold"] = t["threshold"].clamp_min(0.0)
    if activation in ("topk", "batchtopk") and raw.get("rescale_acts_by_decoder_norm"):
        # 6.x TopK: top-k of pre·‖W_dec_i‖, decode divides back; folding the norms is exact.
        norms = t["W_dec"].norm(dim=1)
        t["W_enc"], t["b_enc"], t["W_dec"] = t["W_enc"] * norms, t["b_enc"] * norms, t["W_dec"] / norms[:, None]
    if scale is not None:
        t["W_enc"], t["W_dec"], t["b_dec"] = t["W_enc"] * scale, t["W_dec"] / scale, t["b_dec"] / scale
    cfg = make_config(
        source,
        d_in=d_in, d_sae=d_sae, activation=activation, k=k,
        apply_b_dec_to_input=bool(raw.get("apply_b_dec_to_input", True)),
        model_name=overrides.get("model_name") or raw.get("model_name") or meta.get("model_name"),
        hook_layer=int(hook_layer) if hook_layer is not None else None,
        hook_name=hook_name,
        dtype=str(raw.get("dtype") or dtype_name(tensors["W_enc"])),
        extra={"format": "saelens", **{key: raw[key] for key in ("saeembed",) if key in raw},
               **({"norm_scaling_factor": scale} if scale is not None else {})},
    )
    return build(cfg, t)


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
    cfg.update({key: value for key, value in c.extra.items() if key not in ("format", "norm_scaling_factor")})
    tensors = {n: getattr(sae, n).detach().to(dtype).contiguous() for n in ("W_enc", "W_dec", "b_enc", "b_dec")}
    if sae.threshold is not None:
        tensors["threshold"] = sae.threshold.detach().to(dtype).contiguous()
    save_file(tensors, str(path / SAELENS_WEIGHTS))
    (path / SAELENS_CFG).write_text(json.dumps(cfg, indent=2))
    return path


def _claims_dir(path: Path) -> Path | None:
    return path if (path / SAELENS_CFG).is_file() and (path / SAELENS_WEIGHTS).is_file() else None


FORMAT = Format(
    name="saelens", help="SAELens (cfg.json + sae_weights.safetensors)", load=load_saelens,
    files=lambda t: [t / SAELENS_CFG, t / SAELENS_WEIGHTS], claims_dir=_claims_dir,
    members=(SAELENS_CFG, SAELENS_WEIGHTS),
)

__all__ = ['FORMAT', 'load_saelens', 'save_saelens', 'SAELENS_WEIGHTS']
