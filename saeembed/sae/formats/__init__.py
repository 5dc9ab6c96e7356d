"""Load and save SAE checkpoints in the layouts researchers have on disk: one module per format,
found through one registry.

Supported layouts (auto-detected by :func:`detect_layout`, in this order):

- **SAELens**: ``cfg.json`` + ``sae_weights.safetensors`` (pre-6.0 and 6.x config keys).
- **EleutherAI sparsify**: ``cfg.json`` + ``sae.safetensors`` per hookpoint directory
  (``layers.N/``); a checkpoint root holding several hookpoints is addressed as ``ROOT#layers.N``.
- **Gemma Scope**: ``params.npz`` (JumpReLU, Google DeepMind layout).
- **Llama Scope** (OpenMOSS ``lm_saes``): ``hyperparams.json`` + ``checkpoints/final.safetensors``.
- **Goodfire**: one ``*.pth`` state dict (``encoder_linear`` / ``decoder_linear``).

Every loader maps the format's own tensor names onto the one :class:`SparseAutoencoder`, checks
each tensor's shape under its *native* name, and folds any input scaling the format declares into
the weights, so that ``SparseAutoencoder.encode(x)`` equals the format's own encoder on the raw
residual stream ``x``. Where a format does something our module cannot express exactly, the loader
refuses with a :class:`SAEFormatError` instead of producing subtly different latents.

Adding a format: write a module with a ``FORMAT = Format(...)`` and add it to :data:`FORMATS`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..model import SAEShapeError, SparseAutoencoder
from . import gemmascope, goodfire, llamascope, saelens, sparsify
from .common import Format, SAEFormatError, hook_layer_from_name
from .gemmascope import load_gemmascope
from .goodfire import load_goodfire
from .llamascope import load_llamascope
from .saelens import load_saelens, save_saelens
from .sparsify import load_sparsify

FORMATS: dict[str, Format] = {m.FORMAT.name: m.FORMAT for m in (saelens, sparsify, gemmascope, llamascope, goodfire)}
LAYOUTS = tuple(FORMATS)
KNOWN_LAYOUTS_HELP = ", ".join(f.help for f in FORMATS.values())


def detect_layout(path: str | Path) -> tuple[str, Path]:
    """(layout, the path its loader takes) for a checkpoint directory or file.

    A file inside a checkpoint (``cfg.json``, ``final.safetensors``...) resolves to its checkpoint
    directory, so users can point at whatever they downloaded.
    """
    path = Path(path)
    if not path.exists():
        raise SAEFormatError(f"SAE path {path} does not exist; pass a checkpoint directory or 'default'")
    if path.is_file():
        for fmt in FORMATS.values():
            target = fmt.claims_file(path)
            if target is not None:
                return fmt.name, target
        if any(path.name in fmt.members for fmt in FORMATS.values()):
            return detect_layout(path.parent)
        if path.parent.name == "checkpoints":
            return detect_layout(path.parent.parent)
        raise SAEFormatError(f"{path} is not an SAE checkpoint file we know; known layouts: {KNOWN_LAYOUTS_HELP}")
    for fmt in FORMATS.values():
        target = fmt.claims_dir(path)
        if target is not None:
            return fmt.name, target
    sparsify.root_hint(path)
    raise SAEFormatError(f"{path} holds no SAE checkpoint in a known layout; known layouts: {KNOWN_LAYOUTS_HELP}")


def checkpoint_files(path: str | Path) -> list[Path]:
    """The files a checkpoint's loader reads: what an SAE's identity hash must cover (and nothing
    else, so labels, READMEs or intermediate checkpoints next to it do not change the identity)."""
    layout, target = detect_layout(path)
    return FORMATS[layout].files(target)


def load_sae(path: str | Path, overrides: dict[str, Any] | None = None) -> SparseAutoencoder:
    """Load a local checkpoint directory or file, detecting its layout.

    ``overrides`` may set ``model_name``, ``hook_name``, ``hook_layer`` (for formats whose files
    lack them) and ``norm_scaling_factor`` (SAELens ``expected_average_only_in``).
    """
    layout, target = detect_layout(path)
    return FORMATS[layout].load(target, overrides)


__all__ = [
    "FORMATS", "Format", "KNOWN_LAYOUTS_HELP", "LAYOUTS", "SAEFormatError", "SAEShapeError", "checkpoint_files",
    "detect_layout", "hook_layer_from_name", "load_gemmascope", "load_goodfire", "load_llamascope", "load_sae",
    "load_saelens", "load_sparsify", "save_saelens",
]
