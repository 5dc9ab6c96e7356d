"""One sparse autoencoder module covering the activation kinds public SAEs use.

Every format loader in ``formats/`` produces this module, so the encoder math lives in exactly
one place and each loader only has to map tensor names and shapes onto it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

ACTIVATIONS = ("relu", "topk", "batchtopk", "jumprelu")


class SAEShapeError(ValueError):
    """A checkpoint's tensors do not match the shapes its config (or the reader) declares."""


@dataclass
class SAEConfig:
    """What a checkpoint needs to be rebuilt and matched to a reader.

    ``hook_layer`` is the transformer block whose *output* (resid_post) the SAE reads:
    ``hidden_states[hook_layer + 1]`` in Hugging Face numbering.
    """

    d_in: int
    d_sae: int
    activation: str = "relu"
    k: int | None = None
    apply_b_dec_to_input: bool = True
    model_name: str | None = None
    hook_layer: int | None = None
    hook_name: str | None = None
    dtype: str = "float32"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown SAE activation {self.activation!r}; use one of {', '.join(ACTIVATIONS)}"
            )
        if self.activation in ("topk", "batchtopk") and not self.k:
            raise ValueError(f"a {self.activation} SAE needs k (number of active latents per token)")
        if self.d_in <= 0 or self.d_sae <= 0:
            raise ValueError(f"SAE sizes must be positive, got d_in={self.d_in} d_sae={self.d_sae}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SparseAutoencoder(nn.Module):
    """``a = act(W_enc^T (x - b_dec·[apply_b_dec_to_input]) + b_enc)``, ``x̂ = a W_dec + b_dec``.

    Weights are stored in the SAELens orientation: ``W_enc`` [d_in, d_sae], ``W_dec`` [d_sae, d_in].
    BatchTopK checkpoints run as plain TopK at inference (that is how they are evaluated).
    """

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d_in, d_sae = cfg.d_in, cfg.d_sae
        self.W_enc = nn.Parameter(torch.empty(d_in, d_sae))
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.W_dec = nn.Parameter(torch.empty(d_sae, d_in))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        if cfg.activation == "jumprelu":
            self.threshold = nn.Parameter(torch.zeros(d_sae))
        else:
            self.register_parameter("threshold", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Decoder rows of unit norm, encoder initialised as the decoder's transpose."""
        w = torch.randn(self.cfg.d_sae, self.cfg.d_in)
        w = w / w.norm(dim=1, keepdim=True)
        with torch.no_grad():
            self.W_dec.copy_(w)
            self.W_enc.copy_(w.T)

    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.apply_b_dec_to_input:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        kind = self.cfg.activation
        if kind == "relu":
            return torch.relu(pre)
        if kind == "jumprelu":
            return pre * (pre > self.threshold)
        k = min(int(self.cfg.k), pre.shape[-1])  # topk / batchtopk at inference
        vals, idx = pre.topk(k, dim=-1)
        return torch.zeros_like(pre).scatter_(-1, idx, torch.relu(vals))

    def encode_sparse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """For TopK SAEs: (values, latent ids), each [..., k], without materialising d_sae zeros.

        Returns None for activations whose support is not bounded by k (ReLU, JumpReLU).
        """
        if self.cfg.activation not in ("topk", "batchtopk"):
            return None
        pre = self.pre_activation(x.to(self.W_enc.dtype))
        vals, idx = pre.topk(min(int(self.cfg.k), pre.shape[-1]), dim=-1)
        return torch.relu(vals), idx

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent activations for inputs of shape [..., d_in]."""
        x = x.to(self.W_enc.dtype)
        return self.activate(self.pre_activation(x))

    def decode(self, a: torch.Tensor) -> torch.Tensor:
        return a @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def check_shapes(self) -> None:
        """Raise SAEShapeError naming the first tensor that disagrees with the config."""
        expected = {
            "W_enc": (self.cfg.d_in, self.cfg.d_sae),
            "W_dec": (self.cfg.d_sae, self.cfg.d_in),
            "b_enc": (self.cfg.d_sae,),
            "b_dec": (self.cfg.d_in,),
        }
        if self.threshold is not None:
            expected["threshold"] = (self.cfg.d_sae,)
        for name, shape in expected.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise SAEShapeError(
                    f"SAE tensor {name} has shape {list(got)} but d_in={self.cfg.d_in}, "
                    f"d_sae={self.cfg.d_sae} require {list(shape)}; the checkpoint is inconsistent "
                    "with its config"
                )

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> SparseAutoencoder:
        """Copy named tensors in (SAELens names), shape-checking each before anything is written."""
        wanted = ["W_enc", "W_dec", "b_enc", "b_dec"] + (
            ["threshold"] if self.threshold is not None else []
        )
        missing = [n for n in wanted if n not in tensors]
        if missing:
            raise SAEShapeError(
                f"SAE checkpoint lacks tensor(s) {', '.join(missing)}; it is not a "
                f"{self.cfg.activation} SAE in the expected layout"
            )
        for name in wanted:
            own = getattr(self, name)
            got = tuple(tensors[name].shape)
            if got != tuple(own.shape):
                raise SAEShapeError(
                    f"SAE tensor {name} has shape {list(got)} but the config (d_in={self.cfg.d_in}, "
                    f"d_sae={self.cfg.d_sae}) requires {list(own.shape)}; fix the config or the checkpoint"
                )
        with torch.no_grad():
            for name in wanted:
                getattr(self, name).copy_(tensors[name].to(torch.float32))
        return self

    def check_reader(self, hidden_size: int, reader: str = "the reader") -> None:
        """Refuse to run on a reader whose hidden size is not the SAE's input width."""
        if hidden_size != self.cfg.d_in:
            raise SAEShapeError(
                f"SAE expects inputs of width d_in={self.cfg.d_in} but {reader} has hidden size "
                f"{hidden_size}; pick the SAE trained for this reader (or the reader for this SAE)"
            )
