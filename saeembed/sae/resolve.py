"""Turn an ``--sae`` spec into a loaded SAE plus the identity string recorded with corpora.

Specs:

- ``default``: the token-level SAE shipped in this package; ``doc``: the shipped document-level SAE
  (on MiniLM document embeddings, :mod:`saeembed.reader.doc`).
- a local path (directory or file) in any layout :mod:`.formats` detects; ``ROOT#HOOKPOINT``
  picks one hookpoint of a sparsify checkpoint root (``--sae ./sae-llama#layers.10``).
- ``hf:OWNER/REPO/PATH``: ``PATH`` inside a Hugging Face repo, fetched with
  ``huggingface_hub.snapshot_download`` (only ``PATH/*``), or read from the local HF cache when
  offline.
- ``saelens:RELEASE/SAE_ID``: an SAE from SAELens' release registry (needs ``pip install sae-lens``
  for the registry; the weights are then fetched like ``hf:`` and loaded by our own loaders).

The identity is ``name@<sha256 prefix of the checkpoint files>``: the name is for people, the hash
ties stored corpora to the exact weights that made them, whichever spec reached them.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from ..errors import UserError
from .formats import SAEFormatError, checkpoint_files, detect_layout, load_sae
from .model import SAEShapeError, SparseAutoencoder
from .shipped import DEFAULT_SAE_DIR, DOC_SAE_DIR, LABELS_FILE, SHIPPED  # noqa: F401 - re-exported


@dataclass
class LoadedSAE:
    """An SAE with the identity that ties stored corpora to the exact weights that made them."""

    sae: SparseAutoencoder
    sae_id: str
    path: Path
    labels: pl.DataFrame | None


@dataclass
class ResolvedSpec:
    """Where a spec's checkpoint lives locally, the human part of its identity, and config overrides
    a registry supplies (model name, norm scaling factor) that the files themselves lack."""

    path: Path
    name: str
    overrides: dict[str, Any] = field(default_factory=dict)


def _fingerprint(path: Path) -> str:
    """sha256 prefix over the checkpoint files (name + bytes, sorted), not the labels next to them."""
    try:
        files = sorted(checkpoint_files(path))
    except SAEFormatError:
        files = [path] if path.is_file() else sorted(
            p for p in path.rglob("*") if p.is_file() and p.name != LABELS_FILE)
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:12]


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hf_fetch(repo: str, subpath: str, spec: str, cache_dir: str | Path | None = None) -> Path:
    """Local directory for ``subpath`` of a hub repo: the cache when offline, else a download.

    Offline (``HF_HUB_OFFLINE=1``) we only look in the cache, so a missing SAE fails in
    milliseconds with the fix, instead of after network time-outs.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    subpath = subpath.strip("/")
    patterns = [f"{subpath}/*", subpath] if subpath else None
    offline = _hub_offline()
    try:
        root = Path(snapshot_download(repo, allow_patterns=patterns, cache_dir=cache_dir,
                                      local_files_only=offline))
    except GatedRepoError:
        raise UserError(f"{spec}: the repo {repo} is gated; accept its licence on huggingface.co and log "
                        "in (hf auth login), or pass a local path") from None
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise UserError(f"{spec}: the Hugging Face repo {repo} does not exist (or is private); check the "
                        "name or pass a local path") from None
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE=1 is set" if offline else "the hub could not be reached"
        raise UserError(f"{spec}: the Hugging Face hub is unreachable ({why}) and {repo}/{subpath} is not in "
                        "the local cache; download it where there is network and pass --sae LOCAL_PATH") from None
    except Exception as exc:  # noqa: BLE001 - network errors differ by huggingface_hub version
        raise UserError(f"{spec}: the Hugging Face hub is unreachable ({type(exc).__name__}); pass a "
                        "local checkpoint path with --sae LOCAL_PATH") from None
    target = root / subpath if subpath else root
    if root.resolve() != target.resolve() and root.resolve() not in target.resolve().parents:
        raise UserError(f"{spec}: the path inside the repo leaves the repo's download folder; write hf:OWNER/REPO/PATH "
                        "with a plain relative PATH")
    if not target.exists():
        raise UserError(f"{spec}: {subpath!r} is not in {repo}; check the path inside the repo")
    return target


def _saelens_lookup(release: str, sae_id: str, spec: str) -> tuple[str, str, dict[str, Any]]:
    """(repo_id, path in repo, overrides) from SAELens' registry of pretrained releases."""
    try:
        try:
            from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory
        except ImportError:
            from sae_lens.toolkit.pretrained_saes_directory import get_pretrained_saes_directory  # type: ignore
    except ImportError:
        raise UserError(f"{spec}: saelens: specs need the SAELens release registry; pip install sae-lens "
                        "(or use hf:REPO/PATH or a local path)") from None
    directory = get_pretrained_saes_directory()
    info = directory.get(release)
    if info is None:
        close = sorted(r for r in directory if release.split("-")[0] in r)[:5]
        raise UserError(f"{spec}: SAELens has no release {release!r}"
                        + (f" (similar: {', '.join(close)})" if close else "") + "; check the release name")
    if sae_id not in info.saes_map:
        some = ", ".join(list(info.saes_map)[:5])
        raise UserError(f"{spec}: release {release} has no SAE {sae_id!r} (e.g. {some}); check the SAE id")
    overrides: dict[str, Any] = {}
    registry_overrides = info.config_overrides or {}
    if isinstance(registry_overrides, dict):
        overrides.update({k: v for k, v in registry_overrides.items()
                          if k in ("model_name", "hook_name", "hook_layer")})
    try:
        from sae_lens.loading.pretrained_saes_directory import get_norm_scaling_factor
        factor = get_norm_scaling_factor(release, sae_id)
    except ImportError:
        factor = None
    if factor is not None:
        overrides["norm_scaling_factor"] = float(factor)
    if "model_name" not in overrides and getattr(info, "model", None):
        overrides["model_name"] = info.model
    return info.repo_id, info.saes_map[sae_id], overrides


def _split_local(spec: str) -> tuple[Path, str | None]:
    """``ROOT#HOOKPOINT`` → (ROOT, HOOKPOINT); a path that exists as written wins over the split."""
    path = Path(spec).expanduser()
    if path.exists() or "#" not in spec:
        return path, None
    root, _, hookpoint = spec.rpartition("#")
    return Path(root).expanduser(), hookpoint


def _check_hub_parts(spec: str, *pieces: str) -> None:
    """Refuse hub specs that could name a folder outside the download cache (``..``, absolute parts)."""
    for piece in pieces:
        if "\\" in piece or any(p in ("..", ".") or p.startswith("~") for p in piece.split("/")):
            raise UserError(f"{spec!r}: a hub spec may not contain '..', '.', '~' or '\\' parts; write "
                            "hf:OWNER/REPO/PATH or saelens:RELEASE/SAE_ID with plain names")


def resolve_spec(spec: str | None, cache_dir: str | Path | None = None) -> ResolvedSpec:
    """Resolve any ``--sae`` spec to a local checkpoint path, its display name and overrides."""
    spec = (spec or "default").strip()
    if spec in SHIPPED:
        if not (SHIPPED[spec] / "cfg.json").exists():
            raise UserError(f"the {spec} SAE is not installed with this package; pass --sae PATH")
        return ResolvedSpec(SHIPPED[spec], spec)
    if spec.startswith("hf:"):
        body, _, hookpoint = spec[3:].partition("#")
        _check_hub_parts(spec, body, hookpoint)
        parts = body.strip("/").split("/")
        if len(parts) < 2 or not all(parts[:2]):
            raise UserError(f"{spec!r} is not an hf: spec; write hf:OWNER/REPO/PATH (PATH inside the repo)")
        repo, subpath = "/".join(parts[:2]), "/".join(parts[2:])
        if hookpoint:
            subpath = f"{subpath}/{hookpoint}".strip("/")
        path = _hf_fetch(repo, subpath, spec, cache_dir)
        return ResolvedSpec(path, f"{repo}/{subpath}".rstrip("/"))
    if spec.startswith("saelens:"):
        release, _, sae_id = spec[len("saelens:"):].partition("/")
        _check_hub_parts(spec, release, sae_id)
        if not release or not sae_id:
            raise UserError(f"{spec!r} is not a saelens: spec; write saelens:RELEASE/SAE_ID")
        repo, folder, overrides = _saelens_lookup(release, sae_id, spec)
        path = _hf_fetch(repo, folder, spec, cache_dir)
        return ResolvedSpec(path, f"{release}/{sae_id}", overrides)
    root, hookpoint = _split_local(spec)
    if not root.exists():
        raise UserError(f"SAE {spec!r} not found; pass 'default', a checkpoint path, hf:OWNER/REPO/PATH "
                        "or saelens:RELEASE/SAE_ID")
    if hookpoint:
        path = root / hookpoint
        if not path.exists():
            raise UserError(f"SAE {spec!r}: {root} has no hookpoint {hookpoint!r}; list {root} for the "
                            "hookpoint directories")
    else:
        path = root
    resolved = path.resolve()
    for name, shipped in SHIPPED.items():
        if resolved == shipped:
            return ResolvedSpec(shipped, name)
    return ResolvedSpec(resolved, _local_name(resolved))


def _local_name(path: Path) -> str:
    """Display name from the checkpoint itself, so a directory and the file in it name one SAE."""
    try:
        layout, target = detect_layout(path)
    except SAEFormatError:
        return path.name if path.is_dir() else path.stem
    if layout == "goodfire":
        return target.stem  # Llama-3.1-8B-Instruct-SAE-l19
    if layout == "gemmascope":
        return target.parent.name  # average_l0_71, not "params"
    if layout == "sparsify" and target.parent.name:
        return f"{target.parent.name}#{target.name}"  # run name + hookpoint, as the spec is written
    return target.name


def resolve_sae_path(spec: str) -> Path:
    """Local path for a spec (``default``, a path, ``ROOT#HOOKPOINT``, ``hf:...``, ``saelens:...``)."""
    return resolve_spec(spec).path


def open_sae(spec: str | None = "default") -> LoadedSAE:
    """Load and shape-check an SAE from a spec; errors are one-line :class:`UserError` s."""
    resolved = resolve_spec(spec or "default")
    path = resolved.path
    try:
        sae = load_sae(path, resolved.overrides)
        fingerprint = _fingerprint(path)
    except (SAEFormatError, SAEShapeError) as exc:
        raise UserError(str(exc)) from None
    labels_path = (path if path.is_dir() else path.parent) / LABELS_FILE
    labels = pl.read_parquet(labels_path) if labels_path.exists() else None
    return LoadedSAE(sae=sae, sae_id=f"{resolved.name}@{fingerprint}", path=path, labels=labels)
