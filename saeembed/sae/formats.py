"""Load and save SAE checkpoints in the layouts researchers have on disk.

Supported layouts (auto-detected by :func:`detect_layout`):

- **SAELens**: ``cfg.json`` + ``sae_weights.safetensors`` (pre-6.0 and 6.x config keys).
- **EleutherAI sparsify**: ``cfg.json`` + ``sae.safetensors`` per hookpoint directory
  (``layers.N/``); a checkpoint root holding several hookpoints is addressed as ``ROOT#layers.N``.
- **Goodfire**: one ``*.pth`` state dict (``encoder_linear`` / ``decoder_linear``).
- **Gemma Scope**: ``params.npz`` (JumpReLU, Google DeepMind layout).
- **Llama Scope** (OpenMOSS ``lm_saes``): ``hyperparams.json`` + ``checkpoints/final.safetensors``.

Every loader maps the format's own tensor names onto the one :class:`SparseAutoencoder`, checks
each tensor's shape under its *native* name (so the error points at what the user can find in the
file), and folds any input scaling the format declares into the weights, so that
``SparseAutoencoder.encode(x)`` equals the format's own encoder on the raw residual stream ``x``.
Where a format does something our module cannot express exactly, the loader refuses with a
:class:`SAEFormatError` instead of producing subtly different latents.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file

from .model import SAEConfig, SAEShapeError, SparseAutoencoder

SAELENS_CFG = "cfg.json"
SAELENS_WEIGHTS = "sae_weights.safetensors"
SPARSIFY_WEIGHTS = "sae.safetensors"
GEMMASCOPE_FILE = "params.npz"
LLAMASCOPE_CFG = "hyperparams.json"
LLAMASCOPE_WEIGHTS = ("checkpoints/final.safetensors", "checkpoints/final.pt")
GOODFIRE_SUFFIXES = (".pth", ".pt")

LAYOUTS = ("saelens", "sparsify", "goodfire", "gemmascope", "llamascope")
KNOWN_LAYOUTS_HELP = (
    "SAELens (cfg.json + sae_weights.safetensors), sparsify (cfg.json + sae.safetensors), "
    "Goodfire (*.pth), Gemma Scope (params.npz), Llama Scope (hyperparams.json + "
    "checkpoints/final.safetensors)"
)


class SAEFormatError(ValueError):
    """The path does not hold an SAE checkpoint in any layout we know, or one we cannot run exactly."""


# --------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------

_NON_RESIDUAL = re.compile(
    r"(hook_mlp_out|hook_attn_out|attn\.hook_z|hook_z\b|mlp\.hook_(pre|post)|hook_resid_mid|"
    r"ln\d*\.hook_normalized|hook_embed|hook_pos_embed|\.mlp$|\.mlp\.|\.self_attn|\.attn$|\.attention)"
)


def hook_layer_from_name(hook_name: str | None, source: str = "the SAE") -> int | None:
    """Block index whose *output* a hook reads, or None when the name carries no layer.

    Our reader hands the SAE block ``L``'s output (resid_post). ``blocks.N.hook_resid_pre`` is
    block ``N-1``'s output, so it maps to ``N-1``. Hooks that are not the residual stream (MLP or
    attention outputs, embeddings) are refused: encoding the residual stream with such an SAE
    would silently produce meaningless latents.
    """
    if not hook_name:
        return None
    if _NON_RESIDUAL.search(hook_name):
        raise SAEFormatError(
            f"{source} reads hook {hook_name!r}, which is not the residual stream after a block; "
            "saeembed feeds SAEs block outputs (resid_post), so use a residual-stream SAE"
        )
    numbers = [int(p) for p in re.split(r"[._/]", hook_name) if p.isdigit()]
    if not numbers:
        return None
    layer = numbers[0]
    if "hook_resid_pre" in hook_name:
        if layer == 0:
            raise SAEFormatError(
                f"{source} reads {hook_name!r} (the token embeddings), which the reader cannot "
                "provide; use an SAE trained on a block's output"
            )
        return layer - 1
    return layer


def _check_native(tensors: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]],
                  source: str, dims: str) -> None:
    """Raise SAEShapeError naming the first missing or mis-shaped tensor, in the file's own names."""
    missing = [n for n in expected if n not in tensors]
    if missing:
        raise SAEShapeError(
            f"{source} lacks tensor(s) {', '.join(missing)} (has {', '.join(sorted(tensors)) or 'none'}); "
            "it is not a complete checkpoint in this layout"
        )
    for name, shape in expected.items():
        got = tuple(tensors[name].shape)
        if got != tuple(shape):
            raise SAEShapeError(
                f"{source}: tensor {name} has shape {list(got)} but {dims} require {list(shape)}; "
                "the checkpoint is inconsistent with its config"
            )


def _make_config(source: str, **kwargs: Any) -> SAEConfig:
    """SAEConfig whose validation errors name the checkpoint they came from."""
    try:
        return SAEConfig(**kwargs)
    except ValueError as exc:
        raise SAEFormatError(f"{source}: {exc}") from None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SAEFormatError(f"cannot read {path}: {exc}; the checkpoint config is damaged") from None
    if not isinstance(data, dict):
        raise SAEFormatError(f"{path} is not a JSON object; the checkpoint config is damaged")
    return data


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types
        raise SAEFormatError(f"cannot read {path}: {exc}; the weight file is damaged or incomplete") from None


def _torch_load_tensors(path: Path) -> Any:
    """``torch.load`` that never executes a pickle: tensor-only files load, anything else is refused
    with one line (torch's own refusal is a multi-line UnpicklingError)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors, or a pickle that holds more than plain tensors
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise SAEFormatError(f"refused to read {path}: it is not a tensor-only torch file ({first}); pickles "
                             "that hold code are never loaded — convert the weights to safetensors") from None


def _build(cfg: SAEConfig, tensors: dict[str, torch.Tensor]) -> SparseAutoencoder:
    sae = SparseAutoencoder(cfg)
    sae.load_tensors(tensors)
    return sae.eval()


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).replace("torch.", "")


# --------------------------------------------------------------------------------------------
# SAELens
# --------------------------------------------------------------------------------------------

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
    raw = _read_json(cfg_path)
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
    tensors = _load_safetensors(w_path)
    if "threshold" not in tensors and "log_threshold" in tensors:
        tensors["threshold"] = tensors.pop("log_threshold").float().exp()
    if "scaling_factor" in tensors and not torch.allclose(tensors["scaling_factor"].float(), torch.tensor(1.0)):
        raise SAEFormatError(f"{source} has a fine-tuning scaling_factor tensor (not all ones), which "
                             "this loader does not apply; fold it into W_dec first")
    expected = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_in), "b_enc": (d_sae,), "b_dec": (d_in,)}
    if activation == "jumprelu":
        expected["threshold"] = (d_sae,)
    _check_native(tensors, expected, source, f"d_in={d_in}, d_sae={d_sae}")
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
    cfg = _make_config(
        source,
        d_in=d_in, d_sae=d_sae, activation=activation, k=k,
        apply_b_dec_to_input=bool(raw.get("apply_b_dec_to_input", True)),
        model_name=overrides.get("model_name") or raw.get("model_name") or meta.get("model_name"),
        hook_layer=int(hook_layer) if hook_layer is not None else None,
        hook_name=hook_name,
        dtype=str(raw.get("dtype") or _dtype_name(tensors["W_enc"])),
        extra={"format": "saelens", **{key: raw[key] for key in ("saeembed",) if key in raw},
               **({"norm_scaling_factor": scale} if scale is not None else {})},
    )
    return _build(cfg, t)


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


# --------------------------------------------------------------------------------------------
# EleutherAI sparsify
# --------------------------------------------------------------------------------------------

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
    raw = _read_json(path / SAELENS_CFG)
    root_cfg = _read_json(path.parent / "config.json") if (path.parent / "config.json").is_file() else {}
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
    tensors = _load_safetensors(path / SPARSIFY_WEIGHTS)
    if "encoder.weight" not in tensors:
        raise SAEShapeError(f"{source} lacks tensor encoder.weight (has {', '.join(sorted(tensors))}); "
                            "it is not a sparsify SAE")
    d_in = raw.get("d_in") or root_cfg.get("d_in") or int(tensors["encoder.weight"].shape[1])
    d_in = int(d_in)
    d_sae = raw.get("num_latents") or (d_in * int(raw["expansion_factor"]) if raw.get("expansion_factor") else None)
    d_sae = int(d_sae) if d_sae else int(tensors["encoder.weight"].shape[0])
    _check_native(tensors, {"encoder.weight": (d_sae, d_in), "encoder.bias": (d_sae,),
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
    cfg = _make_config(
        source, d_in=d_in, d_sae=d_sae, activation="topk", k=int(k), apply_b_dec_to_input=True,
        model_name=overrides.get("model_name") or root_cfg.get("model") or raw.get("model"),
        hook_layer=hook_layer, hook_name=hook_name, dtype=_dtype_name(tensors["encoder.weight"]), extra=extra,
    )
    return _build(cfg, t)


# --------------------------------------------------------------------------------------------
# Goodfire
# --------------------------------------------------------------------------------------------

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
    state = _torch_load_tensors(path)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or "encoder_linear.weight" not in state:
        keys = ", ".join(sorted(map(str, state))) if isinstance(state, dict) else type(state).__name__
        raise SAEFormatError(f"{path} is not a Goodfire SAE (expected encoder_linear.weight, "
                             f"decoder_linear.weight; found {keys})")
    d_sae, d_in = (int(s) for s in state["encoder_linear.weight"].shape)
    _check_native(state, {"encoder_linear.weight": (d_sae, d_in), "encoder_linear.bias": (d_sae,),
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
    cfg = _make_config(
        source, d_in=d_in, d_sae=d_sae, activation="relu", apply_b_dec_to_input=False,
        model_name=overrides.get("model_name") or model_name, hook_layer=hook_layer,
        hook_name=overrides.get("hook_name") or (f"model.layers.{hook_layer}" if hook_layer is not None else None),
        dtype=_dtype_name(state["encoder_linear.weight"]), extra={"format": "goodfire"},
    )
    return _build(cfg, t)


# --------------------------------------------------------------------------------------------
# Gemma Scope
# --------------------------------------------------------------------------------------------

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
    except Exception as exc:
        raise SAEFormatError(f"cannot read {file} as a numpy .npz archive: {exc}") from None
    if "W_enc" not in tensors:
        raise SAEShapeError(f"{source} lacks tensor W_enc (has {', '.join(sorted(tensors))}); it is not a "
                            "Gemma Scope SAE")
    d_in, d_sae = (int(s) for s in tensors["W_enc"].shape)
    _check_native(tensors, {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_in), "b_enc": (d_sae,),
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
    cfg = _make_config(
        source, d_in=d_in, d_sae=d_sae, activation="jumprelu", apply_b_dec_to_input=False,
        model_name=overrides.get("model_name") or model_name, hook_layer=hook_layer,
        hook_name=overrides.get("hook_name") or hook_name, dtype=_dtype_name(tensors["W_enc"]),
        extra={"format": "gemmascope"},
    )
    return _build(cfg, t)


# --------------------------------------------------------------------------------------------
# Llama Scope (OpenMOSS lm_saes)
# --------------------------------------------------------------------------------------------

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
    hp = _read_json(path / LLAMASCOPE_CFG)
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

    weights = next((path / w for w in LLAMASCOPE_WEIGHTS if (path / w).exists()), None)
    if weights is None:
        raise SAEFormatError(f"{source} has no {' or '.join(LLAMASCOPE_WEIGHTS)}; download the checkpoints/ folder too")
    if weights.suffix == ".safetensors":
        tensors = _load_safetensors(weights)
    else:
        state = _torch_load_tensors(weights)
        tensors = state.get("sae", state) if isinstance(state, dict) else {}
    use_dec_bias = bool(hp.get("use_decoder_bias", True))
    expected = {"encoder.weight": (d_sae, d_in), "encoder.bias": (d_sae,), "decoder.weight": (d_in, d_sae)}
    if use_dec_bias:
        expected["decoder.bias"] = (d_in,)
    if "log_jumprelu_threshold" in tensors:
        expected["log_jumprelu_threshold"] = (d_sae,)
    _check_native(tensors, expected, source, f"d_model={d_in}, d_sae={d_sae}")
    if hp.get("use_glu_encoder"):
        raise SAEFormatError(f"{source} uses a GLU encoder, which this loader does not support")

    act = str(hp.get("act_fn", "relu")).lower()
    W_enc = tensors["encoder.weight"].float().T.contiguous()
    b_enc = tensors["encoder.bias"].float()
    W_dec = tensors["decoder.weight"].float().T.contiguous()
    b_dec = tensors["decoder.bias"].float() if use_dec_bias else torch.zeros(d_in)
    k = None
    threshold = None
    if act == "jumprelu":
        activation = "jumprelu"
        if "log_jumprelu_threshold" in tensors:
            threshold = tensors["log_jumprelu_threshold"].float().exp()
        elif hp.get("jump_relu_threshold") is not None:
            threshold = torch.full((d_sae,), float(hp["jump_relu_threshold"]))
        else:
            raise SAEFormatError(f"{source}: act_fn is jumprelu but neither jump_relu_threshold nor a "
                                 "log_jumprelu_threshold tensor is present")
    elif act == "topk":
        activation, k = "topk", hp.get("top_k")
        if not k:
            raise SAEFormatError(f"{source}: act_fn is topk but top_k is missing from hyperparams.json")
        dec_norm = W_dec.norm(dim=1)
        unit = torch.allclose(dec_norm, torch.ones_like(dec_norm), atol=1e-3)
        if hp.get("sparsity_include_decoder_norm", True) and not unit:
            raise SAEFormatError(f"{source}: TopK ranks latents by activation × decoder norm and the "
                                 "decoder norms are not 1; this loader cannot reproduce that ranking")
    elif act == "relu":
        activation = "relu"
    else:
        raise SAEFormatError(f"{source}: act_fn {act!r} is not supported; supported: jumprelu, topk, relu")

    norm = str(hp.get("norm_activation", "inference")).lower()
    if norm == "dataset-wise":
        avg = hp.get("dataset_average_activation_norm") or {}
        if not isinstance(avg, dict) or avg.get("in") is None:
            raise SAEFormatError(f"{source}: norm_activation is dataset-wise but "
                                 "dataset_average_activation_norm.in is missing; add it to hyperparams.json")
        f_in = math.sqrt(d_in) / float(avg["in"])
        f_out = math.sqrt(d_in) / float(avg.get("out", avg["in"]))
    elif norm == "inference":
        f_in = f_out = 1.0
    else:
        raise SAEFormatError(f"{source}: norm_activation={norm!r} rescales each token or batch by its own "
                             "norm, which cannot be folded into the weights; use a dataset-wise or "
                             "inference checkpoint")
    apply_bias = bool(hp.get("apply_decoder_bias_to_pre_encoder", False)) and use_dec_bias
    if apply_bias and not math.isclose(f_in, f_out, rel_tol=1e-6):
        raise SAEFormatError(f"{source}: subtracts decoder.bias before encoding with different in/out "
                             "norms, which one decoder bias cannot express")
    # encode: (x·f_in − b) W + c = (x − b/f_in)(f_in W) + c ; decode: (a W_dec + b)/f_out
    t = {"W_enc": W_enc * f_in, "b_enc": b_enc, "W_dec": W_dec / f_out, "b_dec": b_dec / f_out}
    if threshold is not None:
        t["threshold"] = threshold
    cfg = _make_config(
        source, d_in=d_in, d_sae=d_sae, activation=activation, k=int(k) if k else None,
        apply_b_dec_to_input=apply_bias,
        model_name=overrides.get("model_name") or hp.get("model_name") or "meta-llama/Llama-3.1-8B",
        hook_layer=hook_layer, hook_name=overrides.get("hook_name") or hook_in,
        dtype=_dtype_name(tensors["encoder.weight"]),
        extra={"format": "llamascope", "input_scale": f_in, "output_scale": f_out},
    )
    return _build(cfg, t)


# --------------------------------------------------------------------------------------------
# detection and dispatch
# --------------------------------------------------------------------------------------------

LOADERS: dict[str, Callable[..., SparseAutoencoder]] = {
    "saelens": load_saelens, "sparsify": load_sparsify, "goodfire": load_goodfire,
    "gemmascope": load_gemmascope, "llamascope": load_llamascope,
}


def _sparsify_hookpoints(path: Path) -> list[str]:
    if not path.is_dir():
        return []
    return sorted((d.name for d in path.iterdir()
                   if d.is_dir() and (d / SAELENS_CFG).is_file() and (d / SPARSIFY_WEIGHTS).is_file()),
                  key=lambda n: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", n)])


def detect_layout(path: str | Path) -> tuple[str, Path]:
    """(layout, the path its loader takes) for a checkpoint directory or file.

    A file inside a checkpoint (``cfg.json``, ``final.safetensors``...) resolves to its checkpoint
    directory, so users can point at whatever they downloaded.
    """
    path = Path(path)
    if not path.exists():
        raise SAEFormatError(f"SAE path {path} does not exist; pass a checkpoint directory or 'default'")
    if path.is_file():
        name = path.name
        if name == GEMMASCOPE_FILE or path.suffix == ".npz":
            return "gemmascope", path
        if path.suffix in GOODFIRE_SUFFIXES and path.parent.name != "checkpoints":
            return "goodfire", path
        if name in (SAELENS_CFG, SAELENS_WEIGHTS, SPARSIFY_WEIGHTS, LLAMASCOPE_CFG):
            return detect_layout(path.parent)
        if path.parent.name == "checkpoints":
            return detect_layout(path.parent.parent)
        raise SAEFormatError(f"{path} is not an SAE checkpoint file we know; known layouts: {KNOWN_LAYOUTS_HELP}")
    if (path / SAELENS_CFG).is_file() and (path / SAELENS_WEIGHTS).is_file():
        return "saelens", path
    if (path / SAELENS_CFG).is_file() and (path / SPARSIFY_WEIGHTS).is_file():
        return "sparsify", path
    if (path / GEMMASCOPE_FILE).is_file():
        return "gemmascope", path / GEMMASCOPE_FILE
    if (path / LLAMASCOPE_CFG).is_file():
        return "llamascope", path
    pths = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in GOODFIRE_SUFFIXES)
    if len(pths) == 1:
        return "goodfire", pths[0]
    if len(pths) > 1:
        raise SAEFormatError(f"{path} holds several .pth files ({', '.join(p.name for p in pths)}); "
                             "pass the one you want")
    hookpoints = _sparsify_hookpoints(path)
    if hookpoints:
        shown = ", ".join(hookpoints[:6]) + (", ..." if len(hookpoints) > 6 else "")
        raise SAEFormatError(f"{path} is a sparsify checkpoint root with {len(hookpoints)} hookpoints "
                             f"({shown}); pick one with --sae '{path}#{hookpoints[0]}'")
    raise SAEFormatError(f"{path} holds no SAE checkpoint in a known layout; known layouts: {KNOWN_LAYOUTS_HELP}")


def checkpoint_files(path: str | Path) -> list[Path]:
    """The files a checkpoint's loader reads: what an SAE's identity hash must cover (and nothing
    else, so labels, READMEs or intermediate checkpoints next to it do not change the identity)."""
    layout, target = detect_layout(path)
    if layout == "saelens":
        return [target / SAELENS_CFG, target / SAELENS_WEIGHTS]
    if layout == "sparsify":
        return [target / SAELENS_CFG, target / SPARSIFY_WEIGHTS]
    if layout == "llamascope":
        weights = next(target / w for w in LLAMASCOPE_WEIGHTS if (target / w).exists()) \
            if any((target / w).exists() for w in LLAMASCOPE_WEIGHTS) else None
        return [target / LLAMASCOPE_CFG] + ([weights] if weights else [])
    return [target]


def load_sae(path: str | Path, overrides: dict[str, Any] | None = None) -> SparseAutoencoder:
    """Load a local checkpoint directory or file, detecting its layout.

    ``overrides`` may set ``model_name``, ``hook_name``, ``hook_layer`` (for formats whose files
    lack them) and ``norm_scaling_factor`` (SAELens ``expected_average_only_in``).
    """
    layout, target = detect_layout(path)
    return LOADERS[layout](target, overrides)


__all__ = [
    "LAYOUTS", "SAEFormatError", "SAEShapeError", "checkpoint_files", "detect_layout", "hook_layer_from_name",
    "load_gemmascope", "load_goodfire", "load_llamascope", "load_sae", "load_saelens", "load_sparsify",
    "save_saelens",
]
