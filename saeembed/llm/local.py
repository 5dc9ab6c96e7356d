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
    """A transformers chat model run in-process; one generation at a time (it already uses all cores)."""

    backend = "local"

    def __init__(self, model: str | None = None, device: str = "auto") -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ..reader import pick_device, resolve_reader

        name, load_from = resolve_reader(model)
        self.model = name
        self.device = pick_device(device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(load_from)
            with quiet_model_loading():
                self.lm = AutoModelForCausalLM.from_pretrained(load_from, dtype="auto").to(self.device).eval()
        except OSError as exc:
            raise UserError(f"cannot load local LLM {name!r} ({str(exc).splitlines()[0][:120]}); pass a local "
                            "model directory or a cached hub id to --llm-model") from None
        if not getattr(self.tokenizer, "chat_template", None):
            raise UserError(f"local LLM {name!r} has no chat template; use an instruction-tuned chat model")
        self._lock = threading.Lock()

    def complete(self, messages: Messages, max_tokens: int = 128, temperature: float = 0.0) -> Completion:
        import torch

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

    def sample_texts(self, prefix: str, n: int, max_tokens: int = 16, temperature: float = 1.0,
                     seed: int = 0) -> list[Completion]:
        """``n`` sampled continuations of ``prefix`` (no chat template), reproducible for a given ``seed``.

        Why: one greedy answer of a 135M model names a few categories of a query and often repeats
        itself; the names that recur across many samples are the ones it is surest of
        (:mod:`saeembed.analysis.facets` counts them).
        """
        import torch

        t0 = time.perf_counter()
        ids = self.tokenizer(prefix, return_tensors="pt")
        ids = {k: v.to(self.device) for k, v in ids.items()}
        device = torch.device(self.device)
        cuda = [device.index or 0] if device.type == "cuda" else []
        # generate() draws from the global generators: seed them inside fork_rng, which restores them after
        with self._lock, torch.inference_mode(), torch.random.fork_rng(devices=cuda):
            torch.manual_seed(int(seed))
            out = self.lm.generate(**ids, max_new_tokens=max_tokens, do_sample=True, temperature=temperature,
                                   top_p=0.95, top_k=None, num_return_sequences=n,
                                   pad_token_id=self.tokenizer.eos_token_id)
        n_in = ids["input_ids"].shape[1]
        secs = (time.perf_counter() - t0) / max(n, 1)
        return [Completion(self.tokenizer.decode(row[n_in:], skip_special_tokens=True), int(n_in),
                           int(row.shape[0] - n_in), seconds=secs) for row in out]


__all__ = ["LocalChat"]
