"""The reader: a Hugging Face model cut after the SAE's layer, turning documents into hidden states.

Hook point: ``resid_post`` of block ``L`` (0-based), i.e. the output of decoder/encoder block ``L``.
In Hugging Face numbering that is ``outputs.hidden_states[L + 1]`` (index 0 is the embedding
output), and in SAELens/TransformerLens naming ``blocks.L.hook_resid_post``. Blocks after ``L``
are removed from the module, so they never run and never occupy memory; a forward hook on block
``L`` captures its output and stops the forward there (the final norm never runs either).

Documents become *windows* (:mod:`.windows`): token ids plus a mask of which positions may be
pooled. Template tokens (chat wrapper, BOS/CLS/SEP) are never pooled unless ``include_special``
is set, because they fire the same latents in every document and pollute the max-pool. A document
longer than the window is split into several windows, each re-using the template prefix; pooling
then takes the max across windows, so nothing is truncated.

In a causal reader (``prefix_cache``, the default) the template prefix is computed once and its
key/value cache reused for every batch, and the tokens after the last content token are not run
(:mod:`.prefix`); the reader verifies on probe documents that this reproduces the full forward.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from ..corpus import MESSAGE_SEPARATOR
from ..errors import UserError
from ..quiet import quiet_model_loading
from .prefix import PrefixCache, cache_kwarg, max_relative_error, new_cache, prefix_cache_support, tolerance
from .resolve import pick_device, pick_dtype, resolve_reader
from .windows import Window, pad_batch

log = logging.getLogger(__name__)

SENTINEL = "\u2063SAEEMBED{}\u2063"
_PROBES: list[str | list[dict]] = [
    "The quick brown fox jumps over the lazy dog, twice.", "Hi",
    [{"role": "user", "content": "What is a dog?"}, {"role": "assistant", "content": "A loyal animal."}],
]


class _StopForward(Exception):  # noqa: N818 - a control-flow signal that ends the forward, not an error
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


def _n_layers(config: object) -> int:
    n = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    if n is None:
        raise UserError("the reader's config does not declare its number of layers")
    return int(n)


def _check_layer(name: str, config: object, layer: int) -> None:
    n = _n_layers(config)
    if not 0 <= layer < n:
        raise UserError(f"layer {layer} is out of range for {name} ({n} blocks: 0..{n - 1}); pass a valid --layer")


def _common_prefix(a: list[int], b: list[int]) -> list[int]:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


class Reader:
    """A model truncated after block ``layer`` that returns that block's output per token."""

    # True for readers whose one vector describes the whole document (:class:`DocReader`)
    document_level: bool = False

    def __init__(
        self,
        model: str | None = None,
        layer: int = 15,
        device: str = "auto",
        dtype: str | None = None,
        chat_template: bool | None = None,
        include_special: bool = False,
        window: int | None = None,
        prefix_cache: bool = True,
    ) -> None:
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        name, load_from = resolve_reader(model)
        dev = pick_device(device)
        torch_dtype = pick_dtype(dtype, dev)
        try:
            config = AutoConfig.from_pretrained(load_from)
            tokenizer = AutoTokenizer.from_pretrained(load_from)
        except OSError as exc:
            raise UserError(
                f"cannot load reader {name!r} ({str(exc).splitlines()[0][:160]}); pass a local "
                "model directory or a hub id that is cached (offline: HF_HUB_OFFLINE=1)"
            ) from None
        _check_layer(name, config, layer)

        with quiet_model_loading():  # loading a CausalLM checkpoint into AutoModel reports the unused head
            model_obj = AutoModel.from_pretrained(load_from, dtype=torch_dtype)
        self._setup(name, model_obj, tokenizer, layer, dev, torch_dtype, chat_template, include_special, window,
                    prefix_cache)

    @classmethod
    def from_model(cls, model: nn.Module, tokenizer: object, layer: int, name: str = "in-memory", *,
                   chat_template: bool | None = None, include_special: bool = False, window: int | None = None,
                   prefix_cache: bool = True) -> Reader:
        """A reader around an already built base model (e.g. random weights from a config, for
        benchmarks): cut after ``layer`` and used on the device and dtype it is on."""
        self = cls.__new__(cls)
        _check_layer(name, model.config, layer)
        p = next(model.parameters())
        self._setup(name, model, tokenizer, layer, p.device, p.dtype, chat_template, include_special, window,
                    prefix_cache)
        return self

    def _setup(self, name: str, model_obj: nn.Module, tokenizer: object, layer: int, device: torch.device,
               dtype: torch.dtype, chat_template: bool | None, include_special: bool, window: int | None,
               prefix_cache: bool) -> None:
        config = model_obj.config
        self.name, self.tokenizer, self.device, self.dtype = name, tokenizer, device, dtype
        self.layer = layer
        self.n_layers = _n_layers(config)
        parent, attr, blocks = _find_blocks(model_obj, self.n_layers)
        kept = nn.ModuleList(list(blocks)[: layer + 1])
        setattr(parent, attr, kept)
        self._captured: torch.Tensor | None = None
        kept[layer].register_forward_hook(self._capture)
        self.model = model_obj.to(self.device).eval()
        self.hidden_size = int(getattr(config, "hidden_size", None) or config.n_embd)
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
        self._cache_kw = cache_kwarg(self.model)
        self._prefixes: dict[int, PrefixCache] = {}
        self.skip_suffix = False
        self.prefix_cache_error: float | None = None  # measured by the self-check
        self.prefix_cache_off_because = "" if prefix_cache else "turned off (prefix_cache=False)"
        if prefix_cache:
            self._enable_prefix_cache(kept)

    # -- hook -----------------------------------------------------------------------------------
    def _capture(self, module: nn.Module, args: tuple, output: object) -> None:
        hidden = output[0] if isinstance(output, (tuple, list)) else output
        self._captured = hidden
        raise _StopForward

    @torch.inference_mode()
    def hidden_states(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Block ``layer``'s output for a padded batch: [batch, tokens, hidden_size].

        ``attention_mask`` may be wider than ``ids`` by the length of one of the reader's cached
        prefixes (what :func:`pad_batch` makes of windows with ``start > 0``): the prefix's keys and
        values then come from the cache and the positions of ``ids`` continue after it.
        """
        start = attention_mask.shape[1] - ids.shape[1]
        kwargs: dict = {"use_cache": False}
        if start:
            prefix = self._prefixes.get(start)
            if prefix is None:
                raise ValueError(f"the attention mask is {start} tokens wider than the ids, but this reader "
                                 f"caches no prefix of that length (it has {sorted(self._prefixes)})")
            rows, n = ids.shape
            kwargs = {self._cache_kw: prefix.for_batch(rows), "use_cache": True,
                      "position_ids": (torch.arange(n, device=self.device) + start).unsqueeze(0).expand(rows, n)}
        return self._forward(ids, attention_mask, **kwargs)

    @torch.inference_mode()
    def hidden_states_packed(self, ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """Block ``layer``'s output for *packed* rows: several sequences per row, ``position_ids``
        restarting at 0 where each begins, no padding mask and no cache; transformers (≥ 5) then
        builds the block-diagonal causal mask itself. Causal readers only; used by
        ``benchmarks/gpu_encode.py`` to compare packed with padded batches."""
        return self._forward(ids, None, position_ids=position_ids.to(self.device), use_cache=False)

    def _forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None, **kwargs) -> torch.Tensor:
        self._captured = None
        mask = None if attention_mask is None else attention_mask.to(self.device)
        try:
            self.model(input_ids=ids.to(self.device), attention_mask=mask, **kwargs)
        except _StopForward:
            pass
        assert self._captured is not None, "forward hook did not fire"
        out, self._captured = self._captured, None
        return out

    # -- shared prefix ---------------------------------------------------------------------------
    @property
    def prefix_cache(self) -> bool:
        """Whether template prefixes come from the cache and trailing template tokens are skipped."""
        return bool(self._prefixes) or self.skip_suffix

    @property
    def cached_prefixes(self) -> list[list[int]]:
        return [p.ids for p in self._prefixes.values()]

    def _prefix_candidates(self) -> list[list[int]]:
        """Token prefixes shared by many documents: the template's head of a plain document (system
        prompt + assistant header, or the BOS), and the part of it a chat that opens with a user
        message shares too (system prompt + ``<|im_start|>``)."""
        plain = self.pieces("x")[0][0]
        cands = [plain]
        if self.chat_template:
            user = self.pieces([{"role": "user", "content": "x"}])[0][0]
            cands.append(_common_prefix(plain, user))
        # nested prefixes of one another, so a prefix is identified by its length
        return [c for c in {len(c): c for c in cands}.values() if c and c == plain[:len(c)]]

    @torch.inference_mode()
    def _enable_prefix_cache(self, kept: nn.ModuleList) -> None:
        if self.include_special:
            self.prefix_cache_off_because = "template tokens are pooled (include_special)"
            return
        ok, why = prefix_cache_support(self.model, kept, self.layer + 1)
        if not ok:
            self.prefix_cache_off_because = why
            return
        for ids in self._prefix_candidates():
            cache = new_cache(self.model.config)
            self._forward(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long),
                          **{self._cache_kw: cache, "use_cache": True})
            self._prefixes[len(ids)] = PrefixCache.from_cache(ids, cache, self.layer + 1, self.model.config)
        self.skip_suffix = True
        err = self._self_check()
        self.prefix_cache_error = err
        if err > tolerance(self.dtype):
            log.warning("reader %s: the prefix cache differs from the full forward by %.2g (> %.0g); "
                        "using the full forward", self.name, err, tolerance(self.dtype))
            self._prefixes.clear()
            self.skip_suffix = False
            self.prefix_cache_off_because = f"it did not reproduce the full forward (error {err:.2g})"

    def _self_check(self) -> float:
        """Max per-token relative error of pooled hidden states, cached/trimmed vs full forward."""
        probes = _PROBES if self.chat_template else [p for p in _PROBES if isinstance(p, str)]
        fast = [w for i, p in enumerate(probes) for w in self.windows(p, i)]
        full = [Window(w.doc, w.ids, w.pool) for w in fast]
        err = 0.0
        for group in {w.start for w in fast}:
            batch = [w for w in fast if w.start == group]
            ref_batch = [f for f, w in zip(full, fast) if w.start == group]
            ids, attn, pool = pad_batch(batch, self.pad_id)
            rids, rattn, rpool = pad_batch(ref_batch, self.pad_id)
            got = self.hidden_states(ids, attn)[pool.to(self.device)]
            ref = self.hidden_states(rids, rattn)[rpool.to(self.device)]
            err = max(err, max_relative_error(got.float(), ref.float()))
        return err

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

    def token_ends(self, doc: str | list[dict]) -> list[int] | None:
        """Where each pooled token ends in :func:`saeembed.corpus.document_text` of the document (token
        ``i`` covers ``[ends[i - 1], ends[i])``, the first from 0), or None where tokens have no place in
        the text (pooled template tokens, a tokenizer without offsets).

        Why stored at encode: a view marks where a latent fires from the stored token position and
        these ends, with no tokenizer or forward. A token is given the text that decoding the tokens
        up to it adds (as :func:`saeembed.highlight.token_activations` shows tokens), so the tokens
        tile the text: whitespace a tokenizer skips, and the line between two messages, go to the
        next token, and a character split over several byte-level tokens belongs to the token that
        completes it (the ones before it end where they start).
        """
        if self.include_special or not getattr(self.tokenizer, "is_fast", False):
            return None
        messages = doc if isinstance(doc, list) else [{"role": "assistant", "content": doc}]
        ends: list[int] = []
        base = at = 0
        for m in messages:
            content = m["content"]
            enc = self.tokenizer(content, add_special_tokens=False, return_offsets_mapping=True)
            kept = [e for t, (_, e) in zip(enc["input_ids"], enc["offset_mapping"]) if t not in self.special_ids]
            starts = [s for t, (s, _) in zip(enc["input_ids"], enc["offset_mapping"]) if t not in self.special_ids]
            for i, e in enumerate(kept):
                at = at if i + 1 < len(kept) and starts[i + 1] < e else max(base + e, at)
                ends.append(at)
            base += len(content) + len(MESSAGE_SEPARATOR)
        return ends

    def windows(self, doc: str | list[dict], doc_idx: int) -> list[Window]:
        """Split a document into windows of at most ``self.window`` tokens.

        The leading template tokens are repeated at the start of every window so each window
        sees the same framing; content is cut into consecutive, non-overlapping chunks. With the
        prefix cache on, each window's ``start``/``stop`` mark the part the model computes.
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
            wins = [Window(doc_idx, ids, pool)]
        else:
            first_content = pool.index(True) if True in pool else 0
            prefix_ids, prefix_pool = ids[:first_content], pool[:first_content]
            body_ids, body_pool = ids[first_content:], pool[first_content:]
            step = self.window - len(prefix_ids)
            wins = [
                Window(doc_idx, prefix_ids + body_ids[s:s + step], prefix_pool + body_pool[s:s + step],
                       offset=sum(prefix_pool) * (s // step) + sum(body_pool[:s]))
                for s in range(0, len(body_ids), step)
            ]
        if self.prefix_cache:
            for w in wins:
                self._trim(w)
        return wins

    def _trim(self, w: Window) -> None:
        """Set the computed span of ``w``: after the longest cached prefix it starts with, up to its
        last pooled token (windows without a pooled token keep the full forward)."""
        if True not in w.pool:
            return
        first = w.pool.index(True)
        last = len(w.pool) - w.pool[::-1].index(True)
        if self.skip_suffix:
            w.stop = last
        for n in sorted(self._prefixes, reverse=True):
            if n <= first and w.ids[:n] == self._prefixes[n].ids:
                w.start = n
                break
