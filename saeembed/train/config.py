"""The trainer's hyper-parameters, importable without torch (the CLI builds ``train-sae``'s flags from them)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..options import option


@dataclass
class TrainConfig:
    """Hyper-parameters (also ``saeembed train-sae``'s flags); defaults follow Gao et al. 2024 scaled to a
    small CPU run."""

    d_sae: int = option(6144, "number of latents", min=2)
    k: int = option(32, "active latents per token (TopK)", min=1)
    epochs: float = option(4.0, "passes over the training tokens", min=0.0, min_open=True)
    steps: int | None = option(None, "optimizer steps (overrides --epochs)", min=1)
    batch_size: int = option(2048, "training tokens per optimizer step", min=1)
    lr: float | None = option(None, "Adam learning rate (default 2e-4 / sqrt(d_sae / 2^14))", min=0.0, min_open=True)
    aux_k: int | None = option(None, "dead latents that reconstruct the residual in the AuxK loss "
                                     "(default min(d_in / 2, 256))", min=1)
    auxk_coef: float = option(1 / 32, "AuxK loss weight (0 disables)", min=0.0)
    dead_tokens: int = option(200_000, "a latent is dead after this many training tokens without firing", min=1)
    heldout_frac: float = option(0.05, "fraction of documents held out", "--heldout", "--heldout-frac", min=0.0,
                                 max=0.5)
    warmup_steps: int = option(20, "linear learning-rate warm-up steps", min=0)
    decay_frac: float = option(0.2, "linear learning-rate decay to 0 over this last fraction of the steps",
                               min=0.0, max=1.0)
    seed: int = option(0, "random seed (document sampling, initialisation)")
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    threads: int | None = option(None, "torch CPU threads (default: torch's choice)", min=1)
    log_every: int = option(50, "log the training loss every N steps", min=1)
    buffer_tokens: int = option(4_000_000, "training tokens shuffled together in memory (all of them when they "
                                           "fit: one full shuffle per epoch)", min=1)
    extra: dict[str, Any] = option({}, "recorded with the checkpoint (cache size, timings)", cli=False)

    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else 2e-4 / math.sqrt(self.d_sae / 2 ** 14)
