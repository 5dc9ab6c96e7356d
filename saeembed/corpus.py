"""Read a corpus file into one validated frame: ``row_idx``, ``text`` or ``messages``, ``meta``.

Validation happens here, before any model is loaded, so bad input fails in a second with a
message that says what to fix, and never after half a corpus has been encoded.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from .errors import UserError

FORMATS = {".parquet": "parquet", ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".json": "json", ".txt": "txt"}
DEFAULT_TEXT_COLUMNS = ("text", "document", "content", "output", "response", "body")
# never text: binary data or a broken export, and C tools, terminals and some CSV readers cut strings
# at it (PostgreSQL refuses it in text for the same reason), so documents holding one are refused
NUL = "\x00"


@dataclass
class Corpus:
    """A validated corpus. ``docs`` has ``row_idx`` (position in the source file), ``text``
    (plain documents) or ``messages`` (JSON list of {role, content}), and ``meta`` (JSON of the
    remaining columns)."""

    source: str
    docs: pl.DataFrame
    kind: str  # "text" or "messages"
    fingerprint: str
    column: str = "text"  # the source column the documents were read from
    where: str | None = None  # the SQL condition that selected the rows, if any
    source_rows: int | None = None  # rows of the source before --where / --limit / --drop-empty

    @property
    def n_docs(self) -> int:
        return self.docs.height


def _decode_utf8(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UserError(
            f"{path} is not valid UTF-8 (byte {exc.start}, line {line}); re-encode it, e.g. "
            f"`iconv -f latin1 -t utf-8 {path.name} > fixed{path.suffix}`"
        ) from None


# a \\uD800-\\uDFFF escape preceded by an even number of backslashes (so it is an escape, not text)
_SURROGATE_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u([dD][89a-fA-F][0-9a-fA-F]{2})")


def _check_surrogates(path: Path, text: str) -> None:
    """Refuse JSON text holding a lone UTF-16 surrogate escape (``"\\ud800"``).

    Why: it is not a character; the JSON reader silently turns it into a NUL byte, which would be
    stored and analysed as if it were text. A high surrogate directly followed by a low one is a
    valid pair (an emoji) and passes.
    """
    pending: tuple[int, str] | None = None  # (end, code) of a high surrogate still waiting for its low half

    def fail(at: int, code: str) -> None:
        line = text.count("\n", 0, at) + 1
        raise UserError(f"{path} line {line}: the escape \\u{code} is a lone UTF-16 surrogate, not a character; "
                        "fix or remove it")

    for m in _SURROGATE_ESCAPE.finditer(text):
        start, code = m.start() + len(m.group(1)), m.group(2)
        if int(code, 16) < 0xDC00:
            if pending is not None:
                fail(*pending)
            pending = (m.end(), code)
        elif pending is not None and pending[0] == start:
            pending = None
        else:
            fail(*(pending or (start, code)))
    if pending is not None:
        fail(*pending)


def _check_json_records(where: Path, text: str, lines: bool) -> dict[str, str]:
    """Check JSON (lines) record by record and return {field: where it first holds a non-string}.

    Why: polars parses a whole file at once and reports a malformed line without its number, and it
    silently turns a field holding strings on some rows and numbers, booleans or lists on others into
    text ('5', 'true', '["x"]'); :func:`read_corpus` refuses that for the documents' field. Python's
    parser costs far less than reading the documents does.
    """
    found: dict[str, str] = {}

    def note(record: Any, pos: str) -> None:
        if not isinstance(record, dict):
            raise UserError(f"{where} {pos} is not a JSON object; write one object per document")
        for key, value in record.items():
            if value is not None and not isinstance(value, str) and key not in found:
                found[key] = f"{pos} holds {json.dumps(value)[:40]}"

    if lines:
        for i, line in enumerate(text.split("\n"), 1):  # not splitlines(): JSON strings may hold U+2028
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UserError(f"{where} line {i} is not JSON ({exc.msg}); fix or remove that line") from None
                note(record, f"line {i}")
    else:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{where} is not valid JSON ({exc.msg} at line {exc.lineno}); fix the file") from None
        for i, record in enumerate(obj if isinstance(obj, list) else [obj]):
            note(record, f"row {i}")
    return found


def _read_text_files(path: Path) -> pl.DataFrame:
    entries = sorted(path.rglob("*.txt"))
    odd = next((p for p in entries if not p.is_file() and not p.is_dir()), None)
    if odd is not None:  # a pipe would block the read, a broken link would vanish from the corpus unseen
        raise UserError(f"{odd} in the corpus folder is not a regular file (a pipe, device or broken link?); "
                        "remove it or move it out of the folder")
    files = [p for p in entries if p.is_file()]
    if not files:
        raise UserError(f"directory {path} holds no .txt files; pass a file or a folder of .txt documents")
    texts = [_decode_utf8(f, f.read_bytes()) for f in files]
    return pl.DataFrame({"text": texts, "path": [str(f.relative_to(path)) for f in files]})


def _read_frame(path: Path) -> tuple[pl.DataFrame, dict[str, str]]:
    """The file as a frame, plus (JSON only) where each field first holds a non-string value."""
    if path.is_dir():
        return _read_text_files(path), {}
    if not path.is_file():
        raise UserError(f"{path} is not a regular file (a pipe or device?); save the corpus to a file and pass that")
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UserError(
            f"cannot read {path.name}: unknown extension {path.suffix!r}; use one of "
            f"{', '.join(sorted(FORMATS))} or a folder of .txt files"
        )
    try:
        if fmt == "parquet":
            return pl.read_parquet(path, glob=False), {}
        data = path.read_bytes()
        text = _decode_utf8(path, data)
        if fmt in ("csv", "tsv"):
            return pl.read_csv(io.BytesIO(data), separator="\t" if fmt == "tsv" else ",",
                               infer_schema_length=10000), {}
        if fmt in ("jsonl", "json"):
            _check_surrogates(path, text)
            non_strings = _check_json_records(path, text, lines=fmt == "jsonl")
            read = pl.read_ndjson if fmt == "jsonl" else pl.read_json
            return read(io.BytesIO(data)), non_strings
        return pl.DataFrame({"text": text.splitlines()}, schema={"text": pl.String}), {}
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - polars raises many types; the message is what matters
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot parse {path} as {fmt}: {first}; check the file's format") from None


def _normalise_messages(value: object, row: int) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise UserError(f"row {row}: messages column is not JSON; store a list of "
                            "{role, content} objects") from None
    if hasattr(value, "to_list"):
        value = value.to_list()
    if not isinstance(value, list) or not value or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in value
    ):
        raise UserError(f"row {row}: messages must be a non-empty list of {{role, content}} strings; "
                        "fix the row or drop it")
    if any(NUL in m["content"] for m in value):
        raise UserError(f"row {row}: a message holds a NUL character (U+0000), which is not text; remove it or "
                        "the row")
    return json.dumps([{"role": m["role"], "content": m["content"]} for m in value], ensure_ascii=False)


MESSAGE_SEPARATOR = "\n"  # between the contents of a chat document's messages in its text


def document_text(doc: str | list[dict]) -> str:
    """The text a document is shown as: itself, or a chat's message contents one per line (what
    stored token ends index into and what a document-level reader embeds)."""
    if isinstance(doc, str):
        return doc
    return MESSAGE_SEPARATOR.join(str(m.get("content", "")) for m in doc)


STDIN = "-"
MEMORY_PREFIX = "python:"  # ``source`` of corpora handed over in memory, e.g. python:polars.DataFrame


def _read_stdin() -> tuple[pl.DataFrame, dict[str, str]]:
    """JSON lines from standard input (``saeembed encode - ...``), checked like a .jsonl file."""
    data = sys.stdin.buffer.read()
    where = Path("<stdin>")
    text = _decode_utf8(where, data)
    _check_surrogates(where, text)
    if not text.strip():
        raise UserError("standard input is empty; pipe JSON lines into saeembed encode -")
    non_strings = _check_json_records(where, text, lines=True)
    try:
        return pl.read_ndjson(io.BytesIO(data)), non_strings
    except Exception as exc:  # noqa: BLE001 - polars raises many types; the message is what matters
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"cannot parse standard input as JSON lines: {first}; pipe one JSON object per line") from None


def _surrogate_error(exc: UnicodeEncodeError, where: str) -> UserError:
    """Python strings may hold lone UTF-16 surrogates (``"\ud800"``), which are not characters and
    have no UTF-8 form; say which text holds one instead of failing deep inside polars."""
    text, at = str(exc.object), exc.start
    return UserError(f"a text in {where} holds a lone UTF-16 surrogate (\\u{ord(text[at]):04x} in "
                     f"{text[max(at - 20, 0):at + 20]!r}), which is not a character; fix or remove it")


def _frame_from_memory(data: Any) -> tuple[pl.DataFrame, str] | None:
    """(frame, source label) for data handed over in memory, or None when ``data`` is a path."""
    if isinstance(data, pl.DataFrame):
        return data, f"{MEMORY_PREFIX}polars.DataFrame"
    if isinstance(data, pl.LazyFrame):
        return data.collect(), f"{MEMORY_PREFIX}polars.LazyFrame"
    if isinstance(data, (list, tuple)):
        if not all(isinstance(t, str) for t in data) and not all(isinstance(t, dict) for t in data):
            raise UserError("a list corpus must hold strings (one document each) or dicts (one row each)")
        try:
            frame = pl.DataFrame({"text": list(data)}, schema={"text": pl.String}) if all(
                isinstance(t, str) for t in data) else pl.DataFrame(list(data))
        except UnicodeEncodeError as exc:
            raise _surrogate_error(exc, "the list") from None
        return frame, f"{MEMORY_PREFIX}list"
    kind = f"{type(data).__module__.split('.')[0]}.{type(data).__name__}"
    if kind == "pandas.DataFrame":
        try:
            return pl.from_pandas(data), f"{MEMORY_PREFIX}{kind}"
        except UnicodeEncodeError as exc:
            raise _surrogate_error(exc, "the DataFrame") from None
    if kind.startswith("datasets.") and hasattr(data, "to_polars"):
        return data.to_polars(), f"{MEMORY_PREFIX}datasets.Dataset"
    if isinstance(data, (str, Path)):
        return None
    raise UserError(f"cannot read a corpus from a {kind}; pass a file path, '-', a polars/pandas DataFrame, a "
                    "list of strings or a datasets.Dataset")


def describe_rows(corpus: Corpus) -> str:
    """Where the documents come from within the source, for the encode log: the column, the filter."""
    parts = [f"column {corpus.column!r}"]
    if corpus.where is not None:
        parts.append(f"{corpus.n_docs:,} of {corpus.source_rows:,} rows where {corpus.where}")
    return ", ".join(parts)


def describe_source(source: str) -> str:
    """A short name for messages: the file's name, 'standard input' or the in-memory type."""
    if source.startswith(MEMORY_PREFIX):
        return f"a {source[len(MEMORY_PREFIX):]} in memory"
    return "standard input" if source == "<stdin>" else Path(source).name


CorpusSource = str | Path | pl.DataFrame | list | Any


def _load(source: CorpusSource) -> tuple[pl.DataFrame, str, str, dict[str, str]]:
    """(frame, source label recorded with the corpus, name used in messages, JSON non-strings)."""
    in_memory = _frame_from_memory(source)
    if in_memory is not None:
        df, label = in_memory
        return df, label, label, {}
    if str(source) == STDIN:
        df, non_strings = _read_stdin()
        return df, "<stdin>", "standard input", non_strings
    path = Path(source)
    if not path.exists():
        raise UserError(f"corpus file {path} not found; check the path")
    df, non_strings = _read_frame(path)
    return df, str(path.resolve()), path.name, non_strings


def _body_column(df: pl.DataFrame, where: str, text_col: str | None, messages_col: str | None) -> tuple[str, str]:
    """(column, kind) holding the documents: the given one, or ``text``-like / the only string column."""
    cols = df.columns
    if text_col and messages_col:
        raise UserError("pass either --text-col or --messages-col, not both")
    if messages_col:
        if messages_col not in cols:
            raise UserError(f"column {messages_col!r} not in {where} (columns: {', '.join(cols)}); "
                            "pass the right --messages-col")
        return messages_col, "messages"
    col = text_col
    if col is None:
        col = next((c for c in DEFAULT_TEXT_COLUMNS if c in cols), None)
        strings = [c for c in cols if df.schema[c] == pl.String]
        if col is None and len(strings) == 1:
            col = strings[0]
        if col is None:
            raise UserError(f"cannot tell which column of {where} holds the text (columns: "
                            f"{', '.join(cols)}); pass --text-col")
    if col not in cols:
        raise UserError(f"column {col!r} not in {where} (columns: {', '.join(cols)}); pass the right --text-col")
    if df.schema[col] != pl.String:
        raise UserError(f"column {col!r} of {where} has type {df.schema[col]}, not text; "
                        "pass the text column with --text-col")
    return col, "text"


def _matching(df: pl.DataFrame, where: str, what: str) -> pl.DataFrame:
    """The rows of ``df`` (which has ``row_idx``) for which the SQL condition ``where`` holds, in order.

    DuckDB evaluates it over the source's columns, on a connection without file access: a condition
    selects rows and can read nothing else.
    """
    import duckdb

    if not where.strip():
        raise UserError("--where is empty; pass an SQL condition over the source's columns, e.g. "
                        "--where \"generator = 'gpt4'\"")
    con = duckdb.connect(":memory:", config={"enable_external_access": False})
    try:
        con.register("source_rows", df.to_arrow())
        sql = f"SELECT row_idx FROM source_rows WHERE ({where})"
        if len(duckdb.extract_statements(sql)) != 1:
            raise UserError(f"--where {where!r} is not one condition; pass e.g. --where \"lang = 'en' AND n > 3\"")
        keep = con.execute(sql).fetchnumpy()["row_idx"]
    except duckdb.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"--where {where!r} does not run on {what} ({first}); write an SQL condition over its "
                        f"columns: {', '.join(c for c in df.columns if c != 'row_idx')}") from None
    finally:
        con.close()
    if len(keep) == 0:
        raise UserError(f"--where {where!r} matches none of the {df.height} rows of {what}; check the condition "
                        "and the values in those columns")
    return df.filter(pl.col("row_idx").is_in(keep.tolist()))


def _without_empty(df: pl.DataFrame, col: str, kind: str, where: str, drop_empty: bool) -> pl.DataFrame:
    """Refuse (or, with ``drop_empty``, skip) rows whose document is empty or null."""
    empty = pl.col(col).is_null() | (pl.col(col).str.strip_chars() == "") if kind == "text" else pl.col(col).is_null()
    bad = df.filter(empty)
    if not bad.height:
        return df
    if not drop_empty:
        raise UserError(f"{bad.height} row(s) of {where} have empty or null {col!r} (first at row "
                        f"{bad['row_idx'][0]}); remove them or pass --drop-empty")
    df = df.join(bad.select("row_idx"), on="row_idx", how="anti")
    if df.height == 0:
        raise UserError(f"every row of {where} has empty {col!r}; nothing to encode")
    return df


def _fingerprint(kind: str, docs: pl.DataFrame, body: str) -> str:
    """What a resumed encode must find unchanged: the documents' text and their row numbers."""
    h = hashlib.sha256()
    h.update(kind.encode())
    for v in docs[body].to_list():
        h.update(v.encode("utf-8"))
        h.update(b"\0")
    h.update(json.dumps(docs["row_idx"].to_list()[:1] + docs["row_idx"].to_list()[-1:]).encode())
    return h.hexdigest()[:16]


def read_corpus(
    source: CorpusSource,
    text_col: str | None = None,
    messages_col: str | None = None,
    drop_empty: bool = False,
    limit: int | None = None,
    where: str | None = None,
) -> Corpus:
    """Read and validate a corpus from a file, stdin (``"-"``) or memory (polars/pandas frame, list of
    strings, datasets.Dataset). Raises :class:`UserError` naming the problem and the fix.

    The text comes from ``text_col``, else the first of :data:`DEFAULT_TEXT_COLUMNS` the source has,
    else its only string column. ``where``: keep only the rows for which this SQL condition holds
    (DuckDB, over the source's columns; a long-format file holding several corpora is split this
    way); ``limit`` then keeps the first N of them. ``row_idx`` stays the row in the source.
    """
    df, label, what, non_strings = _load(source)
    if df.height == 0:
        raise UserError(f"corpus {describe_source(label)} has no rows; pass at least one document")
    n_source = df.height
    col, kind = _body_column(df, what, text_col, messages_col)
    if kind == "text" and col in non_strings:
        raise UserError(f"{what} {non_strings[col]} as {col!r}, which is not a JSON string; documents must be "
                        "text: quote it, or fix or remove that row")
    df = df.with_row_index("row_idx")
    if where is not None:
        df = _matching(df, where, what)
    if limit is not None:
        if limit < 1:
            raise UserError(f"--limit must be at least 1 (got {limit}); leave it out to encode every row")
        df = df.head(limit)
    df = _without_empty(df, col, kind, what, drop_empty)
    if kind == "text":
        nul = df.filter(pl.col(col).str.contains(NUL, literal=True))["row_idx"]
        if len(nul):
            raise UserError(f"{len(nul)} document(s) of {what} hold a NUL character (U+0000), which is not text "
                            f"(first at row {nul[0]}); remove the NULs (e.g. tr -d '\\000') or those rows")
    meta_cols = [c for c in df.columns if c not in ("row_idx", col)]
    if meta_cols:
        meta = df.select(pl.struct(meta_cols).struct.json_encode().alias("meta"))["meta"]
    else:
        meta = pl.Series("meta", [None] * df.height, dtype=pl.String)
    if kind == "messages":
        values = [_normalise_messages(v, r) for v, r in zip(df[col].to_list(), df["row_idx"].to_list())]
        body = pl.Series("messages", values, dtype=pl.String)
    else:
        body = df[col].alias("text")
    docs = pl.DataFrame([df["row_idx"].cast(pl.Int64), body, meta])
    return Corpus(source=label, docs=docs, kind=kind, fingerprint=_fingerprint(kind, docs, body.name), column=col,
                  where=where, source_rows=n_source)
