"""Import and export of label files, with the checks that keep labels tied to the right SAE.

Why the strict import checks: a label file written for another SAE (other width, other layer)
imports "fine" and then silently mislabels every latent. Ids must lie in ``0..d_sae-1``, appear
once per source, and the file must not hold more labels than the SAE has latents; any violation
refuses the whole file and leaves the store untouched (one transaction). Export writes the same
formats back (Neuronpedia JSONL, CSV, JSON), so labels round-trip between stores and tools.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from ..errors import UserError
from ..fsutil import atomic_write_bytes
from ..labelrule import CONTEXT_LABEL_SOURCE, naming_labels
from ..store.guard import check_output_path
from ..store.handle import as_store
from .catalog import labels_of, resolve_sae_id, write_labels
from .parse import parse_label_file

if TYPE_CHECKING:
    from ..store.handle import Store

log = logging.getLogger(__name__)

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


def file_scores_to_description(labels: pl.DataFrame) -> pl.DataFrame:
    """Move a file's own scores into the description and leave ``score`` empty.

    Why: ``features.score`` holds one measure (detection AUC, :mod:`saeembed.labels.score`) so that
    labels of different sources compare; a file's score measures something else (a Neuronpedia
    simulation score, a team's rating) and would be compared as if it were the same.
    """
    note = pl.format("score in the file: {}", pl.col("score").round(4).cast(pl.String))
    desc = (pl.when(pl.col("score").is_null()).then(pl.col("description"))
            .when(pl.col("description").is_null() | (pl.col("description") == "")).then(note)
            .otherwise(pl.concat_str([pl.col("description"), note], separator=" · ")))
    return labels.with_columns(desc.alias("description"), pl.lit(None, pl.Float64).alias("score"))


def import_labels(store: Store | str | Path, path: str | Path, sae: str | None = None,
                  source: str | None = None) -> pl.DataFrame:
    """Import a label file into the store for one SAE; returns (sae, label_source, n_labels).

    All-or-nothing: any mismatch raises :class:`UserError` before anything is written. The labels
    are stored unscored (a score in the file goes into the description: :func:`file_scores_to_description`);
    :func:`saeembed.labels.measure.score_store_labels` measures them on a corpus.
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
            log.warning("warning: %s was made for model %r, this SAE reads %r", path, meta["modelId"], info["reader"])
    labels = file_scores_to_description(validate_labels(frame, int(info["d_sae"]), str(path)))
    write_labels(st, info["sae"], labels)
    return (labels.group_by("label_source").len("n_labels").sort("label_source")
            .select(pl.lit(info["sae"]).alias("sae"), "label_source", "n_labels"))


EXPORT_FORMATS = ("neuronpedia", "csv", "json")


def _export_format(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        if fmt not in EXPORT_FORMATS:
            raise UserError(f"unknown label export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")
        return fmt
    name = path.name.lower().removesuffix(".gz")
    for suffix, kind in ((".jsonl", "neuronpedia"), (".csv", "csv"), (".json", "json")):
        if name.endswith(suffix):
            return kind
    raise UserError(f"cannot tell the export format from {path.name!r}; name it .jsonl (Neuronpedia), .csv or "
                    ".json, or pass --as")


def _neuronpedia_rows(rows: pl.DataFrame, info: dict) -> list[dict]:
    """Neuronpedia explanation rows; ``layer`` carries the block number first, as Neuronpedia's own ids do
    (``18-saeembed-default``), so an import checks it against the SAE's layer."""
    sae_name = str(info["sae"]).split("@")[0].replace("/", "-")
    layer = f"{info['layer']}-saeembed-{sae_name}" if info.get("layer") is not None else f"saeembed-{sae_name}"
    out = []
    for r in rows.iter_rows(named=True):
        row = {"modelId": info.get("reader"), "layer": layer, "index": str(r["feature_id"]),
               "description": r["label"], "explanationModelName": r["label_source"]}
        if r["score"] is not None:
            row["scores"] = [r["score"]]
        out.append(row)
    return out


def export_labels(store: Store | str | Path, path: str | Path, *, sae: str | None = None, fmt: str | None = None,
                  source: str | None = None, all_sources: bool = False) -> pl.DataFrame:
    """Write an SAE's labels to ``path`` and return the rows written.

    By default each latent's preferred label (the one analyses show); ``source`` exports one
    label source, ``all_sources`` every (latent, source) row of a label (a latent's ``context`` row
    quotes its strongest context and names nothing: ``source="context"`` exports those). Formats:
    Neuronpedia explanations JSONL (``.jsonl``, gzipped when the name ends in ``.gz``), CSV
    (``feature_id,label,label_source,score,description``) or JSON ``{id: {label, description, score}}``;
    :func:`import_labels` reads all three back.
    """
    import gzip
    import json


    st = as_store(store)
    path = check_output_path(path, st.path)
    kind = _export_format(path, fmt)
    info = resolve_sae_id(st, sae)
    if all_sources or source:
        rows = labels_of(st, info["sae"])
        if not source:  # label files hold labels; a latent's context names nothing (``--source context`` asks for it)
            rows = rows.filter(pl.col("label_source") != CONTEXT_LABEL_SOURCE)
        if source:
            rows = rows.filter(pl.col("label_source") == source)
            if rows.height == 0:
                raise UserError(f"SAE {info['sae']} has no labels from source {source!r}; see saeembed labels list")
    else:
        rows = st.features(info["sae"], contexts=False)
    rows = naming_labels(rows, contexts=True).select(
        "feature_id", "label", "label_source", "score", "description").sort("feature_id", "label_source")
    if kind == "csv":
        data = rows.write_csv().encode()
    elif kind == "json":
        if rows["feature_id"].n_unique() != rows.height:
            raise UserError("JSON holds one label per latent; export several sources as .jsonl or .csv")
        data = json.dumps({str(r["feature_id"]): {k: r[k] for k in ("label", "description", "score")}
                           for r in rows.iter_rows(named=True)}, ensure_ascii=False, indent=1).encode()
    else:
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in _neuronpedia_rows(rows, info)).encode()
    if path.name.lower().endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    atomic_write_bytes(path, data)
    return rows.with_columns(pl.lit(info["sae"]).alias("sae"))


__all__ = ["validate_labels", "import_labels", "export_labels", "EXPORT_FORMATS"]
