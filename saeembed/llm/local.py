"""A transformers chat model run in-process, so labelling and hypotheses work offline (e.g. the
shipped SmolLM2-135M-Instruct; real use wants a bigger model at an endpoint)."""

from __future__ import annotations

import threading
import time
from typing import Any

from ..errors import UserError
from ..quiet import quiet_model_loading
from .types import Completion, Messages


class LocalChat:
    """A transformers chat model run in-process; one generation at a time (it already uses all cores).

    The weights load on the first generation, not here: an answer already in :class:`~saeembed.llm.LLM`'s
    on-disk cache needs only the model's name, so a repeated query costs no model load."""

    backend = "local"

    def __init__(self, model: str | None = None, device: str = "auto") -> None:
        from ..reader import pick_device, resolve_reader

        name, self._load_from = resolve_reader(model)
        self.model = name
        self.device = pick_device(device)
        self._lock = threading.Lock()  # one generation at a time
        self._load_lock = threading.Lock()
        self._loaded: tuple[Any, Any] | None = None

    def _load(self) -> tuple[Any, Any]:
        """(tokenizer, model), loaded once."""
        with self._load_lock:
            if self._loaded is None:
                from transformers import AutoModelForCausalLM, AutoTokenizer

                try:
                    tokenizer = AutoTokenizer.from_pretrained(self._load_from)
                    with quiet_model_loading():
                        lm = AutoModelForCausalLM.from_pretrained(self._load_from, dtype="auto").to(self.device).eval()
                except OSError as exc:
                    raise UserError(f"cannot load local LLM {self.model!r} ({str(exc).splitlines()[0][:120]}); pass "
                                    "a local model directory or a cached hub id to --llm-model") from None
                if not getattr(tokenizer, "chat_template", None):
                    raise UserError(f"local LLM {self.model!r} has no chat template; use an instruction-tuned chat "
                                    "model")
                self._loaded = (tokenizer, lm)
        return self._loaded

    @property
    def tokenizer(self) -> Any:
        return self._load()[0]

    @property
    def lm(self) -> Any:
        return self._load()[1]

    def complete(self, messages: Messages, max_tokens: int = 128, temperature: float = 0.0) -> Completion:
        import torch

        self._load()
        t0 = time.perf_counter()
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                 return_dict=True)
        ids = {k: v.to(self.device) for k, v in ids.items()}
        kwargs: dict[str, Any] = {"max_new_tokens": max_tokens, "pad_token_id": self.tokenizer.eos_token_id}
        kwargs.update({"do_sample": True, "temperature": temperature} if temperature > 0 else
                      {"do_sample": False, "temperature": None, "top_p": None, "top_k": None})
        with self._lock, torch.inference_mode():
            out = self.lm.generate(**ids, **kwargs)
        n_in = ids["input_ids"].shape[1]
        new = out[0, n_in:]
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        return Completion(text, int(n_in), int(new.shape[0]), seconds=time.perf_counter() - t0)

    def continue_text(self, prefix: str, max_tokens: int = 16) -> Completion:
        """Greedy continuation of ``prefix`` without the chat template.

        Why: a 135M chat model follows a few-shot *pattern* ("speed: fast vs slow") far more reliably
        than an instruction, so offline query handling (:mod:`saeembed.analysis.axis`) prompts it that way.
        """
        import torch

        self._load()
        t0 = time.perf_counter()
        ids = self.tokenizer(prefix, return_tensors="pt")
        ids = {k: v.to(self.device) for k, v in ids.items()}
        with self._lock, torch.inference_mode():
            out = self.lm.generate(**ids, max_new_tokens=max_tokens, do_sample=False, temperature=None, top_p=None,
                                   top_k=None, pad_token_id=self.tokenizer.eos_token_id)
        n_in = ids["input_ids"].shape[1]
        new = out[0, n_in:]
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        return Completion(text, int(n_in), int(new.shape[0]), seconds=time.perf_counter() - t0)


__all__ = ["LocalChat"]
