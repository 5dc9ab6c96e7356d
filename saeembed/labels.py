"""Latent labels: import (Neuronpedia / JSON / CSV), storage, and search by meaning.

Labels live in ``features(sae, feature_id, label, label_source, score, density, description)``,
one row per (latent, label source), so a Neuronpedia explanation, an LLM label and the shipped
offline label of the same latent coexist; readers pick the best by ``score``.

Why the strict import checks: a label file written for another SAE (other width, other layer)
imports "fine" and then silently mislabels every latent. Ids must lie in ``0..d_sae-1``, appear
once per source, and the file must not hold more labels than the SAE has latents; any violation
refuses the whole file and leaves the store untouched (one transaction).

:func:`search_features` ranks latents by how well their labels match a free-text query
(MiniLM cosine similarity plus a keyword boost); analyses use it to select latents by concept.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import math
import re
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
import polars as pl

from . import store as store_mod
from .api import reads_store
from .errors import UserError

if TYPE_CHECKING:
    from .api import Store

LABEL_SCHEMA = {"feature_id": pl.Int32, "label": pl.String, "label_source": pl.String,
                "score": pl.Float64, "density": pl.Float64, "description": pl.String}


# ------------------------------------------------------------------------------ store helpers --
def as_store(store: "Store | str | Path") -> "Store":
    """Accept a Store or a path (see :func:`saeembed.api.as_store`)."""
    from .api import as_store as _as

    return _as(store)


def resolve_sae_id(store: "Store", sae: str | None = None) -> dict[str, Any]:
    """The ``saes`` row meant by ``sae`` (full id, or unique prefix such as ``default``).

    Why a prefix: SAE ids carry a weight hash (``default@1a2b3c...``) nobody wants to type.
    """
    saes = store.sql("SELECT * FROM saes ORDER BY sae")
    if saes.height == 0:
        raise UserError("the store has no SAE yet; encode a corpus first (saeembed encode ...)")
    if sae is None:
        if saes.height > 1:
            raise UserError(f"the store holds {saes.height} SAEs ({', '.join(saes['sae'])}); pick one with --sae")
        return saes.row(0, named=True)
    exact = saes.filter(pl.col("sae") == sae)
    if exact.height:
        return exact.row(0, named=True)
    pref = saes.filter(pl.col("sae").str.starts_with(sae))
    if pref.height == 1:
        return pref.row(0, named=True)
    raise UserError(f"no SAE {sae!r} in this store (SAEs: {', '.join(saes['sae'])}); pass one of these to --sae")


def write_labels(store: "Store | str | Path", sae: str, labels: pl.DataFrame) -> int:
    """Upsert label rows (feature_id, label, label_source[, score, density, description]) in one transaction.

    Rows with the same (sae, feature_id, label_source) are replaced, other sources are kept.
    Returns the number of rows written.
    """
    st = as_store(store)
    frame = labels
    for col, dtype in LABEL_SCHEMA.items():
        if col not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=dtype).alias(col))
    frame = frame.select(pl.lit(sae).alias("sae"), *[pl.col(c).cast(t) for c, t in LABEL_SCHEMA.items()])
    st.close()  # the Store holds a read-only connection; DuckDB allows one writer per file
    con = store_mod.connect(st.path)
    try:
        with store_mod.transaction(con):
            con.register("_new_labels", frame.to_arrow())
            con.execute("""DELETE FROM features f USING _new_labels n
                           WHERE f.sae = n.sae AND f.feature_id = n.feature_id AND f.label_source = n.label_source""")
            con.execute("INSERT INTO features SELECT sae, feature_id, label, label_source, score, density, "
                        "description FROM _new_labels")
            con.unregister("_new_labels")
    finally:
        con.close()
    _EMB_CACHE.clear()
    return frame.height


# ----------------------------------------------------------------------------------- parsing --
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
        shown = ", ".join(f"{m}/{l}" for m, l in sorted(keys)[:4])
        raise UserError(f"{path} holds explanations for {len(keys)} SAEs ({shown}); split it per modelId/layer "
                        "and import the one that matches --sae")
    out = []
    for i, r in enumerate(rows):
        if "index" not in r or "description" not in r:
            raise UserError(f"{path} line {i + 1}: a Neuronpedia row needs 'index' and 'description'; "
                            "is this a Neuronpedia explanations export?")
        model = r.get("explanationModelName") or r.get("typeName") or "unknown"
        out.append((_as_int_id(r["index"], f"{path} line {i + 1}"), str(r["description"]).strip(),
                    source or f"neuronpedia:{model}", _np_score(r), None))
    model_id, layer = next(iter(keys))
    frame = pl.DataFrame(out, schema=["feature_id_raw", "label", "label_source", "score", "description"],
                         orient="row", schema_overrides={"feature_id_raw": pl.Int64, "score": pl.Float64,
                                                         "description": pl.String})
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
    if name.endswith(".csv") or name.endswith(".tsv") or not stripped[:1] in ("{", "["):
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
        if isinstance(v, dict):
            if "label" not in v:
                raise UserError(f"{path}: entry {k} has no 'label'; give {{\"label\": ..., \"description\": ...}}")
            out.append((fid, str(v["label"]).strip(), src, _as_score(v.get("score"), f"{path} entry {k}"),
                        v.get("description")))
        else:
            out.append((fid, str(v).strip(), src, None, None))
    return pl.DataFrame(out, schema=["feature_id_raw", "label", "label_source", "score", "description"],
                        orient="row", schema_overrides={"feature_id_raw": pl.Int64, "score": pl.Float64,
                                                        "description": pl.String}), {}


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
    return pl.DataFrame(out, schema=["feature_id_raw", "label", "label_source", "score", "description"],
                        orient="row", schema_overrides={"feature_id_raw": pl.Int64, "score": pl.Float64,
                                                        "description": pl.String})


def validate_labels(frame: pl.DataFrame, d_sae: int, what: str) -> pl.DataFrame:
    """Refuse labels that cannot belong to an SAE with ``d_sae`` latents; returns them typed."""
    if frame.height == 0:
        raise UserError(f"{what} holds no labels; check the file")
    if frame.height > d_sae:
        raise UserError(f"{what} holds {frame.height} labels but the SAE has only {d_sae} latents; "
                        "it was written for another SAE, pass the matching --sae")
    ids = frame["feature_id_raw"]
    bad = frame.filter((pl.col("feature_id_raw") < 0) | (pl.col("feature_id_raw") >= d_sae))
    if bad.height:
        shown = ", ".join(str(v) for v in bad["feature_id_raw"].head(3).to_list())
        raise UserError(f"{what}: {bad.height} latent ids outside 0..{d_sae - 1} (e.g. {shown}); the file is for "
                        "another SAE, pass the matching --sae")
    dups = frame.group_by("feature_id_raw", "label_source").len().filter(pl.col("len") > 1)
    if dups.height:
        shown = ", ".join(str(v) for v in dups["feature_id_raw"].sort().head(3).to_list())
        raise UserError(f"{what}: {dups.height} latent ids are labelled more than once (e.g. {shown}); keep one "
                        "label per latent and source")
    inf = frame.filter(pl.col("score").is_not_null() & ~pl.col("score").is_finite())
    if inf.height:
        raise UserError(f"{what}: {inf.height} scores are not finite numbers (e.g. latent "
                        f"{inf['feature_id_raw'][0]}: {inf['score'][0]}); fix or empty them")
    empty = frame.filter(pl.col("label").is_null() | (pl.col("label").str.strip_chars() == ""))
    if empty.height:
        raise UserError(f"{what}: {empty.height} labels are empty (e.g. latent {empty['feature_id_raw'][0]}); "
                        "fill or drop them")
    del ids
    return frame.rename({"feature_id_raw": "feature_id"}).with_columns(pl.col("feature_id").cast(pl.Int32))


def _digits(s: str) -> str:
    m = re.match(r"\D*(\d+)", s)
    return m.group(1) if m else ""


def import_labels(store: "Store | str | Path", path: str | Path, sae: str | None = None,
                  source: str | None = None) -> pl.DataFrame:
    """Import a label file into the store for one SAE; returns (sae, label_source, n_labels).

    All-or-nothing: any mismatch raises :class:`UserError` before anything is written.
    """
    st = as_store(store)
    info = resolve_sae_id(st, sae)
    frame, meta = parse_label_file(path, source)
    if meta.get("layer") not in (None, "None") and info.get("layer") is not None:
        np_layer = _digits(meta["layer"])
        if np_layer and int(np_layer) != int(info["layer"]):
            raise UserError(f"{path} labels a layer-{np_layer} SAE ({meta['modelId']}/{meta['layer']}) but SAE "
                            f"{info['sae']} reads layer {info['layer']}; import labels made for this SAE")
    if meta.get("modelId") not in (None, "None") and info.get("reader"):
        norm = lambda s: re.sub(r"[^a-z0-9]", "", s.lower())  # noqa: E731
        if norm(meta["modelId"]) not in norm(info["reader"]):
            print(f"warning: {path} was made for model {meta['modelId']!r}, this SAE reads {info['reader']!r}",
                  file=sys.stderr)
    labels = validate_labels(frame, int(info["d_sae"]), str(path))
    write_labels(st, info["sae"], labels)
    return (labels.group_by("label_source").len("n_labels").sort("label_source")
            .select(pl.lit(info["sae"]).alias("sae"), "label_source", "n_labels"))


# ------------------------------------------------------------------------------------ search ---
_EMB_CACHE: dict[tuple[str, str, str], tuple[str, np.ndarray]] = {}
_EMB_LOCK = threading.Lock()
_STOP = {"the", "and", "for", "with", "that", "this", "from", "are", "was", "about", "into", "its", "of", "a",
         "an", "to", "in", "on", "or", "is", "be", "as", "by", "at", "it"}


def _words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) >= 3 and w not in _STOP]


def _label_embeddings(store_key: str, sae: str, source: str, labels: list[str]) -> np.ndarray:
    """MiniLM embeddings of one (sae, label_source)'s labels, cached while the labels are unchanged.

    Why three levels: embedding the 6,144 labels of the default SAE takes tens of seconds on a
    CPU, and every CLI call is a new process. The memory cache serves repeated calls in one
    process; the disk cache (``SAEEMBED_CACHE/label_embeddings``) serves later processes; the
    package ships the default SAE's embeddings so even the first search is instant. All are keyed
    by a digest of the exact label texts, so edited labels are re-embedded.
    """
    digest = hashlib.sha1("\x00".join(labels).encode()).hexdigest()
    key = (store_key, sae, source)
    with _EMB_LOCK:
        hit = _EMB_CACHE.get(key)
        if hit and hit[0] == digest:
            return hit[1]
    emb = _label_embeddings_on_disk(digest, labels)
    with _EMB_LOCK:
        _EMB_CACHE[key] = (digest, emb)
    return emb


def label_embedding_file(digest: str) -> str:
    return f"label_embeddings_{digest[:20]}.npy"


def _label_embeddings_on_disk(digest: str, labels: list[str]) -> np.ndarray:
    from .embed import get_embedder
    from .reader import cache_dir
    from .sae.resolve import DEFAULT_SAE_DIR

    name = label_embedding_file(digest)
    for path in (DEFAULT_SAE_DIR / name, cache_dir() / "label_embeddings" / name):
        if path.exists():
            try:
                emb = np.load(path).astype(np.float32)
                if emb.shape[0] == len(labels):
                    return emb
            except (OSError, ValueError):
                pass  # a damaged cache file is recomputed below
    emb = get_embedder().embed(labels) if labels else np.zeros((0, 384), np.float32)
    emb = emb.astype(np.float16).astype(np.float32)  # the precision it is cached at, so every run agrees
    path = cache_dir() / "label_embeddings" / name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, emb.astype(np.float16))
        tmp.replace(path)
    except OSError:
        pass  # a read-only home only costs recomputation
    return emb


def _keyword_matches(query_words: list[str], labels: pl.Series) -> np.ndarray:
    """``_keyword_match`` for every label, scoring only labels that contain a query word's stem.

    Why: a Python loop over 65k labels costs ~1 s per search; a label can only match a word whose
    stem it contains, so a vectorised substring prefilter leaves a handful to score exactly.
    """
    kw = np.zeros(len(labels))
    if not query_words:
        return kw
    low = labels.str.to_lowercase()
    hit = pl.select(pl.any_horizontal([low.str.contains(_word_stem(w), literal=True) for w in query_words]))
    for i in np.flatnonzero(hit.to_series().fill_null(False).to_numpy()):
        kw[i] = _keyword_match(query_words, labels[int(i)])
    return kw


def _word_stem(word: str) -> str:
    return word[: max(4, min(6, len(word) - 2))]  # crude stem: 'apologetic' ~ 'apologies'


def _keyword_match(query_words: list[str], text: str) -> float:
    """Share of the query's content words found (as word prefixes, so 'apolog' hits 'apology')."""
    if not query_words:
        return 0.0
    words = _words(text)
    hits = 0
    for q in query_words:
        stem = _word_stem(q)
        if any(w == q or (len(w) >= 4 and w.startswith(stem)) for w in words):
            hits += 1
    return hits / len(query_words)


KEYWORD_WEIGHT = 0.2


@reads_store
def search_features(store: "Store | str | Path", query: str, k: int = 20, sae: str | None = None) -> pl.DataFrame:
    """Latents whose labels best match ``query``, best first.

    ``score = similarity + 0.2 × keyword_match``: MiniLM cosine similarity between the query and
    each label finds paraphrases ("apologetic tone" ~ "saying sorry"); the keyword boost lifts labels
    that literally name the query's words, which short labels need because MiniLM similarities of
    one-word labels are noisy. Every label source of a latent is searched and the best-matching one
    is reported. Columns: sae, feature_id, label, label_source, similarity, keyword_match, score.
    """
    if not query or not query.strip():
        raise UserError("the search query is empty; pass some words, e.g. --search 'apologetic tone'")
    if k <= 0:
        raise UserError("--k must be positive")
    st = as_store(store)
    where, params = "", None
    if sae is not None:
        where, params = "WHERE sae = ?", [resolve_sae_id(st, sae)["sae"]]
    rows = st.sql(f"""SELECT sae, feature_id, label, label_source, description FROM features {where}
                      ORDER BY sae, label_source, feature_id""", params)
    rows = rows.filter(pl.col("label").is_not_null() & (pl.col("label") != "(dead)"))
    out_schema = {"sae": pl.String, "feature_id": pl.Int32, "label": pl.String, "label_source": pl.String,
                  "similarity": pl.Float64, "keyword_match": pl.Float64, "score": pl.Float64}
    if rows.height == 0:
        return pl.DataFrame(schema=out_schema)
    from .embed import get_embedder

    q = get_embedder().embed([query.strip()])[0]
    qwords = _words(query)
    parts = []
    for (sae_id, source), grp in rows.group_by("sae", "label_source", maintain_order=True):
        labels = grp["label"].to_list()
        emb = _label_embeddings(str(st.path), sae_id, source, labels)
        kw = _keyword_matches(qwords, grp["label"])
        parts.append(grp.select("sae", "feature_id", "label", "label_source").with_columns(
            pl.Series("similarity", (emb @ q).astype(np.float64)), pl.Series("keyword_match", kw, pl.Float64)))
    res = pl.concat(parts).with_columns(
        (pl.col("similarity") + KEYWORD_WEIGHT * pl.col("keyword_match")).alias("score"))
    res = (res.sort("score", descending=True).unique(["sae", "feature_id"], keep="first", maintain_order=True)
           .head(k).cast(out_schema))
    return res.select(list(out_schema))


@reads_store
def labels_of(store: "Store | str | Path", sae: str | None = None, feature_ids: Iterable[int] | None = None) -> pl.DataFrame:
    """Every label row (all sources) of the given latents; for reports that compare sources."""
    st = as_store(store)
    info = resolve_sae_id(st, sae)
    df = st.sql("SELECT * FROM features WHERE sae = ? ORDER BY feature_id, score DESC NULLS LAST, label_source",
                [info["sae"]])
    if feature_ids is not None:
        df = df.filter(pl.col("feature_id").is_in(list(feature_ids)))
    return df


__all__ = ["import_labels", "parse_label_file", "validate_labels", "write_labels", "search_features",
           "resolve_sae_id", "labels_of", "as_store"]
