"""Helpers every checkpoint format shares: the error type, shape checks, config building, file reads.

Each format module maps its own tensor names onto the one :class:`~saeembed.sae.model.SparseAutoencoder`
and checks shapes under the *native* names (so an error points at what the user can find in the
file); these helpers keep that mapping short and the messages alike.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from ..model import SAEConfig, SAEShapeError, SparseAutoencoder

SAELENS_CFG = "cfg.json"  # SAELens and sparsify both name their config this


class SAEFormatError(ValueError):
    """The path does not hold an SAE checkpoint in any layout we know, or one we cannot run exactly."""


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


def check_native(tensors: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]],
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


def make_config(source: str, **kwargs: Any) -> SAEConfig:
    """SAEConfig whose validation errors name the checkpoint they came from."""
    try:
        return SAEConfig(**kwargs)
    except ValueError as exc:
        raise SAEFormatError(f"{source}: {exc}") from None


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SAEFormatError(f"cannot read {path}: {exc}; the checkpoint config is damaged") from None
    if not isinstance(data, dict):
        raise SAEFormatError(f"{path} is not a JSON object; the checkpoint config is damaged")
    return data


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise SAEFormatError(f"cannot read {path}: {exc}; the weight file is damaged or incomplete") from None


def torch_load_tensors(path: Path) -> Any:
    """``torch.load`` that never executes a pickle: tensor-only files load, anything else is refused
    with one line (torch's own refusal is a multi-line UnpicklingError)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle/zip errors, or a pickle holding more than tensors
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise SAEFormatError(f"refused to read {path}: it is not a tensor-only torch file ({first}); pickles "
                             "that hold code are never loaded — convert the weights to safetensors") from None


def build(cfg: SAEConfig, tensors: dict[str, torch.Tensor]) -> SparseAutoencoder:
    sae = SparseAutoencoder(cfg)
    sae.load_tensors(tensors)
    return sae.eval()


def dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).replace("torch.", "")


def _never(path: Path) -> Path | None:
    return None


@dataclass(frozen=True)
class Format:
    """One checkpoint layout: how to recognise it, which files it reads, and how to load it.

    ``claims_dir(folder)`` / ``claims_file(file)`` return the path the loader takes when the layout
    recognises it (None otherwise); ``members`` are file names that, pointed at directly, mean "the
    checkpoint is the folder holding this file"; ``files(target)`` lists what an SAE's identity hash
    must cover (weights and config, never labels or READMEs beside them).
    """

    name: str
    help: str
    load: Callable[..., SparseAutoencoder]
    files: Callable[[Path], list[Path]]
    claims_dir: Callable[[Path], Path | None] = _never
    claims_file: Callable[[Path], Path | None] = _never
    members: tuple[str, ...] = field(default_factory=tuple)


__all__ = ["Format", "SAEFormatError", "SAEShapeError", "hook_layer_from_name", "check_native", "make_config",
           "read_json", "load_safetensors", "torch_load_tensors", "build", "dtype_name", "SAELENS_CFG"]
