"""Values as a reader wants them in a table cell: the one formatting of terminal and HTML tables.

Why one place: the terminal and the HTML tables show the same text for the same value (rounded
figures, joined lists, never a Python repr), and a change of format reaches both.
"""

from __future__ import annotations

import math
from typing import Any

SCIENTIFIC_COLUMNS = ("p_value", "q_value")  # small probabilities keep their order of magnitude


def fmt_value(value: Any, column: str = "") -> str:
    """Numbers rounded (p/q-values below 0.001 in scientific notation, shares to 3 decimals, large
    numbers with thousands separators), lists joined (text with "; ", since labels hold commas,
    numbers with ", "), structs as ``key: value`` pairs, missing values empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if column in SCIENTIFIC_COLUMNS and 0 < value < 1e-3:
            return f"{value:.1e}"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.3f}"
    if isinstance(value, (list, tuple)):
        sep = "; " if any(isinstance(v, str) for v in value) else ", "
        return sep.join(fmt_value(v, column) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {fmt_value(v, column)}" for k, v in value.items())
    return str(value)


__all__ = ["fmt_value", "SCIENTIFIC_COLUMNS"]
