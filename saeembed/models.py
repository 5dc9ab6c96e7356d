"""The reader and SAE a corpus was encoded with, loaded once per process from what the store records.

Why one place: recomputing token activations (highlighting, ``show``, the correlation token check,
query-by-example search, LLM labelling) needs exactly the encode's reader settings — model, layer,
chat template, special-token pooling, window, dtype — and the SAE recorded in ``saes.path``. They
used to be re-listed at every call site; :class:`ReaderSettings` reads them from a corpus' recorded
config and :func:`corpus_models` loads (and caches) the pair.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UserError
from .memo import Memo

if TYPE_CHECKING:
    from .reader import Reader
    from .sae import SparseAutoencoder

_MODELS: Memo[tuple[Reader, SparseAutoencoder]] = Memo("corpus models", max_entries=4)


@dataclass(frozen=True)
class ReaderSettings:
    """How a corpus was read: what ``Reader(...)`` needs to reproduce its hidden states."""

    model: str
    layer: int
    chat_template: bool | None = None
    include_special: bool = False
    window: int | None = None
    dtype: str | None = None

    @classmethod
    def from_corpus(cls, reader: str, layer: int, config: str | dict[str, Any] | None) -> ReaderSettings:
        cfg = json.loads(config or "{}") if not isinstance(config, dict) else config
        return cls(model=reader, layer=int(layer), chat_template=cfg.get("chat_template"),
                   include_special=bool(cfg.get("include_special", False)), window=cfg.get("window"),
                   dtype=cfg.get("dtype"))

    def load(self) -> Reader:
        from .reader import make_reader

        kw = asdict(self)
        return make_reader(kw.pop("model"), **kw)


def load_models(settings: ReaderSettings, sae_path: str | Path) -> tuple[Reader, SparseAutoencoder]:
    """The (Reader, SAE) pair for these settings, loaded once per process."""
    def build() -> tuple[Reader, SparseAutoencoder]:
        from .sae import open_sae

        if not Path(sae_path).exists():
            raise UserError(f"the SAE this corpus was encoded with is no longer at {sae_path}; restore it there "
                            "to recompute token activations")
        sae = open_sae(str(sae_path)).sae
        rdr = settings.load()
        return rdr, sae.to(rdr.device).eval()

    return _MODELS.get_or_build((settings, str(sae_path)), build)


def corpus_models(reader: str, layer: int, config: str | dict[str, Any] | None,
                  sae_path: str | Path | None) -> tuple[Reader, SparseAutoencoder]:
    """The models of a corpus from its registry fields (``corpora.reader/layer/config``, ``saes.path``)."""
    if not sae_path:
        raise UserError("the store does not record where this corpus' SAE lives; re-encode it to recompute "
                        "token activations")
    return load_models(ReaderSettings.from_corpus(reader, layer, config), sae_path)


def is_messages_corpus(config: str | dict[str, Any] | None) -> bool:
    cfg = json.loads(config or "{}") if not isinstance(config, dict) else config
    return (cfg.get("extra") or {}).get("kind") == "messages"


__all__ = ["ReaderSettings", "load_models", "corpus_models", "is_messages_corpus"]
