"""Label files as users have them: Neuronpedia explanation exports, JSON ``{id: label}``, CSV.

Parsing only turns a file into rows (feature_id_raw, label, label_source, score, description);
whether the ids fit an SAE is checked by :func:`saeembed.labels.io.validate_labels`, so every
format gets the same strict checks. Ids and scores are parsed strictly: ``nan``, ``inf``, ids beyond
int64 and non-finite scores are refused with the file position.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
from pathlib import Path
from typing import Any

import polars as pl

from ..errors import UserError

RAW_SCHEMA = ["feature_id_raw", "label", "label_source", "score", "description"]
RAW_OVERRIDES = {"feature_id_raw": pl.Int64, "score": pl.Float64, "description": pl.String}

def _open_text(path: Path) -> str:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text; save it as UTF-8 (optionally gzipped)") from None


def _stem(path: Path) -> str:
    name = path.name
    for suf in (".gz", ".jsonl", ".json", ".csv", ".tsv"):
        if name.lower().endswith(suf):
            name = name[: -len(suf)]
    return name


INT64_MAX = 2**63 - 1


def _as_int_id(value: Any, where: str) -> int:
    """A latent id from a label file: an integer (``12``, ``"12"``, ``12.0``), nothing else.

    ``nan``, ``inf`` and ids beyond int64 are refused with the same one line as any other non-id.
    """
    bad = UserError(f"{where}: latent id {value!r} is not an integer latent id; fix the file")
    if isinstance(value, bool):
        raise bad
    if isinstance(value, int):
        out = value
    else:
        try:
            out = int(str(value).strip())
        except ValueError:
            try:
                f = float(value)
            except (TypeError, ValueError):
                raise bad from None
            if not math.isfinite(f) or f != int(f):
                raise bad from None
            out = int(f)
    if abs(out) > INT64_MAX:
        raise bad
    return out


def _as_score(value: Any, where: str) -> float | None:
    """A label score: a finite number or nothing (``inf`` would print as invalid JSON later)."""
    if value is None or value == "":
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{where}: score {value!r} is not a number; fix or empty it") from None
    if not math.isfinite(f):
        raise UserError(f"{where}: score {value!r} is not a finite number; fix or empty it")
    return f


def _as_text(value: Any, where: str, what: str = "label") -> str:
    """A label (or description) as written: JSON text, nothing else.

    Why strict: ``str()`` of a null, NaN, number, boolean or list stores 'None', 'nan', '5', 'True'
    or "['a', 'b']" as if someone had written that label.
    """
    if not isinstance(value, str):
        kind = "null" if value is None else type(value).__name__
        raise UserError(f"{where}: {what} {value!r} is not text (a {kind}); write every {what} as a JSON string")
    return value


def _np_score(row: dict[str, Any]) -> float | None:
    """A Neuronpedia row's score: ``score`` or the best of ``scores`` (numbers or {value})."""
    s = row.get("score")
    if isinstance(s, (int, float)) and not isinstance(s, bool):
        return float(s)
    vals = []
    for item in row.get("scores") or []:
        if isinstance(item, (int, float)) and not isinstance(item, bool):
            vals.append(float(item))
        elif isinstance(item, dict):
            for key in ("value", "score"):
                if isinstance(item.get(key), (int, float)):
                    vals.append(float(item[key]))
    return max(vals) if vals else None


def _parse_neuronpedia(rows: list[dict[str, Any]], path: Path, source: str | None) -> tuple[pl.DataFrame, dict]:
    keys = {(str(r.get("modelId")), str(r.get("layer"))) for r in rows}
    if len(keys) > 1:
        shown = ", ".join(f"{model}/{layer}" for model, layer in sorted(keys)[:4])
        raise UserError(f"{path} holds explanations for {len(keys)} SAEs ({shown}); split it per modelId/layer "
                        "and import the one that matches --sae")
    out = []
    for i, r in enumerate(rows):
        if "index" not in r or "description" not in r:
            raise UserError(f"{path} line {i + 1}: a Neuronpedia row needs 'index' and 'description'; "
                            "is this a Neuronpedia explanations export?")
        model = r.get("explanationModelName") or r.get("typeName") or "unknown"
        where = f"{path} line {i + 1}"
        out.append((_as_int_id(r["index"], where), _as_text(r["description"], where, "description").strip(),
                    source or f"neuronpedia:{model}", _np_score(r), None))
    model_id, layer = next(iter(keys))
    frame = pl.DataFrame(out, schema=RAW_SCHEMA, orient="row", schema_overrides=RAW_OVERRIDES)
    return frame, {"modelId": model_id, "layer": layer}


def parse_label_file(path: str | Path, source: str | None = None) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Read a label file into (feature_id_raw, label, label_source, score, description) + file metadata.

    Formats: Neuronpedia explanation exports (``.jsonl``/``.jsonl.gz``/JSON list of rows with
    ``modelId``, ``layer``, ``index``, ``description``), a JSON object ``{"index": "label"}``
    (values may also be ``{"label", "description", "score"}``), or CSV with ``feature_id,label
    [,description,score]``. Ids are validated against the SAE later, by :func:`import_labels`.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"label file {path} does not exist; check the path")
    text = _open_text(path)
    name = path.name.lower().removesuffix(".gz")
    stripped = text.lstrip()
    if name.endswith(".csv") or name.endswith(".tsv") or stripped[:1] not in ("{", "["):
        return _parse_csv(text, path, source or f"csv:{_stem(path)}", "\t" if name.endswith(".tsv") else ","), {}
    rows: list[Any]
    if name.endswith(".jsonl") or (stripped.startswith("{") and "\n{" in stripped.rstrip()):
        rows = []
        for i, line in enumerate(text.splitlines()):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise UserError(f"{path} line {i + 1} is not JSON ({exc.msg}); fix or remove that line") from None
        if rows and all(isinstance(r, dict) and "index" in r for r in rows):
            return _parse_neuronpedia(rows, path, source)
        if len(rows) != 1:
            raise UserError(f"{path}: JSON lines without 'index' fields; expected a Neuronpedia export")
        obj: Any = rows[0]
    else:
        dup: list[str] = []

        def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
            seen: dict[str, Any] = {}
            for k, v in pairs:
                if k in seen:
                    dup.append(k)
                seen[k] = v
            return seen

        try:
            obj = json.loads(text, object_pairs_hook=hook)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); fix the file") from None
        if dup:
            raise UserError(f"{path}: latent id {dup[0]} is labelled twice; keep one label per latent")
    if isinstance(obj, list):
        if obj and all(isinstance(r, dict) and "index" in r for r in obj):
            return _parse_neuronpedia(obj, path, source)
        raise UserError(f"{path}: a JSON list must hold Neuronpedia rows with 'index' and 'description'; "
                        "for plain labels write an object {\"<latent id>\": \"<label>\"}")
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a JSON object {{\"<latent id>\": \"<label>\"}}")
    src = source or f"json:{_stem(path)}"
    out = []
    for k, v in obj.items():
        fid = _as_int_id(k, str(path))
        where = f"{path} entry {k}"
        if isinstance(v, dict):
            if "label" not in v:
                raise UserError(f"{path}: entry {k} has no 'label'; give {{\"label\": ..., \"description\": ...}}")
            out.append((fid, _as_text(v["label"], where).strip(), src, _as_score(v.get("score"), where),
                        None if v.get("description") is None else _as_text(v["description"], where, "description")))
        else:
            out.append((fid, _as_text(v, where).strip(), src, None, None))
    return pl.DataFrame(out, schema=RAW_SCHEMA, orient="row", schema_overrides=RAW_OVERRIDES), {}


def _parse_csv(text: str, path: Path, source: str, delimiter: str) -> pl.DataFrame:
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    fields = [f.strip().lower() for f in (reader.fieldnames or [])]
    id_col = next((c for c in ("feature_id", "index", "latent", "feature") if c in fields), None)
    if id_col is None or "label" not in fields:
        raise UserError(f"{path}: CSV needs a header with feature_id and label (optional description, score); "
                        f"found {', '.join(fields) or 'no header'}")
    out = []
    for i, raw in enumerate(reader):
        row = {(k or "").strip().lower(): v for k, v in raw.items()}
        where = f"{path} row {i + 2}"
        score_v = _as_score(row.get("score"), where)
        out.append((_as_int_id(row[id_col], where), (row.get("label") or "").strip(), source, score_v,
                    row.get("description") or None))
    return pl.DataFrame(out, schema=RAW_SCHEMA, orient="row", schema_overrides=RAW_OVERRIDES)


__all__ = ["parse_label_file", "RAW_SCHEMA"]
