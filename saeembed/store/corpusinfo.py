"""A corpus' registry row as one typed object: what analyses need to know about a corpus.

Why: analyses passed an untyped dict around (``info["lo"]``, ``info["d_sae"]``…) whose keys were
made up in one place and read in ten. :class:`CorpusInfo` names them, derives the doc-id range from
:mod:`saeembed.ids`, parses the recorded encode settings once, and still answers ``info["lo"]`` so
code and notebooks written against the dict keep working.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..ids import corpus_range

if TYPE_CHECKING:
    from .handle import Store


@dataclass(frozen=True)
class CorpusInfo:
    """One row of ``corpora`` plus the width of its SAE."""

    corpus_id: int
    name: str
    n_docs: int
    reader: str
    layer: int
    sae: str
    d_sae: int | None = None
    source: str | None = None
    pooling: str | None = None
    n_tokens: int | None = None
    created_at: datetime | None = None
    config: str | None = None  # the encode settings as recorded (JSON text)
    settings: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_row(cls, row: dict[str, Any], d_sae: int | None) -> CorpusInfo:
        names = {f.name for f in fields(cls)} - {"settings", "d_sae"}
        values = {k: row.get(k) for k in names}
        return cls(**values, d_sae=d_sae, settings=json.loads(row.get("config") or "{}"))

    @property
    def lo(self) -> int:
        """The smallest doc id this corpus can hold (``corpus_id << 32``)."""
        return corpus_range(self.corpus_id)[0]

    @property
    def hi(self) -> int:
        """The largest doc id this corpus can hold (``corpus_id << 32 | 0xFFFFFFFF``)."""
        return corpus_range(self.corpus_id)[1]

    def __getitem__(self, key: str) -> Any:  # the dict-style access earlier code used
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    def as_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "settings"}
        return {**out, "lo": self.lo, "hi": self.hi}


def corpus_info(store: Store, name: str) -> CorpusInfo:
    """The corpus' registry row (typed; ``info["lo"]`` still works) with its doc-id range and SAE width."""
    row = store.corpus(name)
    found = store.con.execute("SELECT d_sae FROM saes WHERE sae = ?", [row["sae"]]).fetchall()
    return CorpusInfo.from_row(row, int(found[0][0]) if found else None)


__all__ = ["CorpusInfo", "corpus_info"]
