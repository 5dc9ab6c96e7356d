"""Per-token latent activations of stored documents, recomputed on the fly, and their rendering.

The store keeps only pooled values per document (max, sum, count), which is what analyses need;
*where* in a document a latent fires is recomputed here by running the document through the same
reader (model, layer, chat template, window, dtype recorded with the corpus) and SAE (the
``saes.path`` recorded at encode time). Recomputing costs one forward pass per document and keeps
the store small (per-token matrices are ~100× larger than the pooled rows).

Reader and SAE are loaded once per process for each corpus' recorded settings
(:mod:`saeembed.models`), so the labeller and analyses can call :func:`token_activations` repeatedly.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import torch

from ..errors import UserError
from ..models import corpus_models, is_messages_corpus
from ..store.handle import reads_store

if TYPE_CHECKING:
    from ..reader import Reader
    from ..sae import SparseAutoencoder
    from ..store.handle import Store

TOKEN_SCHEMA = {"doc_id": pl.Int64, "position": pl.Int32, "token": pl.String, "feature_id": pl.Int32,
                "activation": pl.Float32}
# one forward at a time: torch already uses every core, and the Reader's capture hook is not re-entrant
_FORWARD_LOCK = threading.Lock()


def _token_strings(tokenizer: Any, ids: list[int]) -> list[str]:
    """Each token's text, so that their concatenation is the decoded document.

    Decoding prefixes (not single ids) keeps multi-byte characters split over several byte-level
    tokens intact: the character is attributed to the token that completes it.
    """
    out: list[str] = []
    prev = ""
    for i in range(len(ids)):
        cur = tokenizer.decode(ids[: i + 1])
        if cur.endswith("\ufffd") and i + 1 < len(ids):
            out.append("")
            continue
        out.append(cur[len(prev):] if cur.startswith(prev) else tokenizer.decode(ids[i:i + 1]))
        prev = cur
    return out


def _words(text: str) -> list[str]:
    """The text as words with the whitespace before them (their concatenation is the text)."""
    return re.findall(r"\s*\S+|\s+$", text) or [text]


@torch.inference_mode()
def compute_token_activations(reader: Reader, sae: SparseAutoencoder, docs: list[tuple[int, Any]],
                              feature_ids: list[int], batch_tokens: int = 4096) -> pl.DataFrame:
    """Per-token activations of ``feature_ids`` for ``docs`` [(doc_id, text or messages)].

    Only pooled (content) tokens are returned; ``position`` counts them from 0 across windows, so
    the max over positions equals the document's stored max activation. A document-level reader's
    one vector describes the whole document, so there every word of the text gets its value.
    """
    from ..reader import batches_by_budget, pad_batch

    feats = torch.tensor(sorted({int(f) for f in feature_ids}), dtype=torch.long)
    if len(feats) and (int(feats.min()) < 0 or int(feats.max()) >= sae.d_sae):
        raise UserError(f"feature ids must lie in 0..{sae.d_sae - 1}; check --feature")
    windows = [w for i, (_, d) in enumerate(docs) for w in reader.windows(d, i)]
    for j, w in enumerate(windows):
        w.order = j  # type: ignore[attr-defined]  # windows of a document stay in document order
    per_window: dict[int, tuple[list[int], np.ndarray]] = {}
    chunk = max(64, (1 << 24) // sae.d_sae)
    feats_dev = feats.to(reader.device)
    for batch in batches_by_budget(windows, batch_tokens):
        ids, attn, pool = pad_batch(batch, reader.pad_id)
        with _FORWARD_LOCK:
            hidden = reader.hidden_states(ids, attn)
            for b, w in enumerate(batch):
                m = pool[b].to(hidden.device)
                h = hidden[b][m]
                vals = [sae.encode(h[c:c + chunk])[:, feats_dev].float().cpu() for c in range(0, h.shape[0], chunk)]
                acts = torch.cat(vals).numpy() if vals else np.zeros((0, len(feats)), np.float32)
                pooled_ids = [t for t, p in zip(w.ids, w.pool) if p]
                per_window[w.order] = (pooled_ids, acts)  # type: ignore[attr-defined]
    rows: dict[str, list] = {k: [] for k in TOKEN_SCHEMA}
    by_doc: dict[int, list[int]] = {}
    for w in windows:
        by_doc.setdefault(w.doc, []).append(w.order)  # type: ignore[attr-defined]
    f_list = feats.tolist()
    for i, (doc_id, _) in enumerate(docs):
        parts = [per_window[o] for o in by_doc.get(i, [])]
        ids = [t for p in parts for t in p[0]]
        acts = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, len(f_list)), np.float32)
        if reader.document_level and len(acts):  # one vector describes the whole document: every word of
            toks = _words(reader.text_of(docs[i][1]))  # the original text carries its value
            acts = np.repeat(acts[:1], len(toks), axis=0)
        else:
            toks = _token_strings(reader.tokenizer, ids)
        n = len(toks)
        for j, f in enumerate(f_list):
            rows["doc_id"].extend([doc_id] * n)
            rows["position"].extend(range(n))
            rows["token"].extend(toks)
            rows["feature_id"].extend([f] * n)
            rows["activation"].extend(acts[:, j].tolist())
    return pl.DataFrame(rows, schema=TOKEN_SCHEMA)


@reads_store
def token_activations(store: Store | str | Path, doc_ids: list[int], feature_ids: list[int]) -> pl.DataFrame:
    """Per-token activations (doc_id, position, token, feature_id, activation) of stored documents.

    Documents may come from different corpora; each is recomputed with its own corpus' reader,
    layer and SAE. Unknown doc ids raise a :class:`UserError` naming them.
    """
    st = store  # opened by reads_store
    doc_ids = [int(d) for d in doc_ids]
    if not doc_ids or not feature_ids:
        return pl.DataFrame(schema=TOKEN_SCHEMA)
    found = st.sql(
        """SELECT d.doc_id, d.text, c.reader, c.layer, c.config, s.path FROM documents d
           JOIN corpora c USING (corpus_id) JOIN saes s ON s.sae = c.sae
           WHERE d.doc_id IN (SELECT unnest(?::BIGINT[]))""", [doc_ids])
    missing = sorted(set(doc_ids) - set(found["doc_id"].to_list()))
    if missing:
        raise UserError(f"no document {missing[0]} in this store ({len(missing)} unknown ids); take doc ids from "
                        "`saeembed sql 'SELECT doc_id, text FROM documents LIMIT 5'`")
    parts = []
    for (reader, layer, config, path), grp in found.group_by("reader", "layer", "config", "path", maintain_order=True):
        rdr, sae = corpus_models(reader, layer, config, path)
        messages = is_messages_corpus(config)
        docs = [(d, json.loads(t) if messages else t) for d, t in zip(grp["doc_id"], grp["text"])]
        parts.append(compute_token_activations(rdr, sae, docs, feature_ids))
    order = {d: i for i, d in enumerate(doc_ids)}
    out = pl.concat(parts)
    return (out.with_columns(pl.col("doc_id").replace_strict(order, return_dtype=pl.Int64).alias("_o"))
            .sort("_o", "feature_id", "position").drop("_o"))


CACHE_PAIRS = 20_000  # (document, latent) token rows kept per process

_CACHE: OrderedDict[tuple, pl.DataFrame] = OrderedDict()
_CACHE_LOCK = threading.Lock()


def _store_key(store: Store) -> tuple:
    """The store file and its last write: any write (a new encode, new labels) starts a new cache."""
    path = Path(store.path)
    stamps = tuple(q.stat().st_mtime_ns if q.exists() else 0 for q in (path, path.with_name(path.name + ".wal")))
    return (str(path.resolve()), stamps)


def cached_token_activations(store: Store, doc_ids: list[int], feature_ids: list[int]) -> pl.DataFrame:
    """:func:`token_activations`, recomputing only (document, latent) pairs not
    seen before in this process (for the requested pairs, in one batch of forwards): a browser page
    reloaded, or a report and a table showing the same documents, cost no new forward."""
    key = _store_key(store)
    with _CACHE_LOCK:
        missing = [(d, f) for d in doc_ids for f in feature_ids if (key, d, f) not in _CACHE]
    if missing:
        new = token_activations(store, sorted({d for d, _ in missing}), sorted({f for _, f in missing}))
        groups = {(int(d), int(f)): g for (d, f), g in new.group_by("doc_id", "feature_id")}
        with _CACHE_LOCK:
            for d, f in missing:
                _CACHE[(key, d, f)] = groups.get((d, f), pl.DataFrame(schema=TOKEN_SCHEMA))
            while len(_CACHE) > CACHE_PAIRS:
                _CACHE.popitem(last=False)
    with _CACHE_LOCK:
        parts = [_CACHE[(key, d, f)] for d in doc_ids for f in feature_ids if (key, d, f) in _CACHE]
    return pl.concat(parts) if parts else pl.DataFrame(schema=TOKEN_SCHEMA)


ANSI_ON = "\x1b[1;38;5;{}m"
ANSI_OFF = "\x1b[0m"
_HEAT = (220, 214, 208, 202, 196)  # yellow → red as activation rises


def render(tokens: pl.DataFrame, doc_id: int, feature_id: int | None = None, style: str = "markers",
           threshold: float = 0.0) -> str:
    """The document's text with the tokens where ``feature_id`` fires (> threshold) highlighted.

    ``markers``: runs of activating tokens wrapped in ``<<`` ``>>`` (for pipes, files and LLM
    prompts); ``ansi``: bold colour whose heat follows the activation relative to the document's max.
    Leading whitespace stays outside a marker so ``<<sorry>>`` reads as a word.
    """
    sel = tokens.filter(pl.col("doc_id") == doc_id)
    if feature_id is None:
        feats = sel["feature_id"].unique().to_list()
        if len(feats) != 1:
            raise UserError(f"document {doc_id} has tokens for {len(feats)} features; pass feature_id")
        feature_id = feats[0]
    sel = sel.filter(pl.col("feature_id") == feature_id).sort("position")
    toks = sel["token"].to_list()
    acts = sel["activation"].to_list()
    top = max(acts) if acts else 0.0
    out: list[str] = []
    i = 0
    while i < len(toks):
        if acts[i] <= threshold:
            out.append(toks[i])
            i += 1
            continue
        j = i
        while j < len(toks) and acts[j] > threshold:
            j += 1
        run = "".join(toks[i:j])
        lead = run[: len(run) - len(run.lstrip())]
        body = run[len(lead):]
        if style == "ansi":
            heat = _HEAT[min(len(_HEAT) - 1, int(max(acts[i:j]) / top * len(_HEAT))) if top > 0 else 0]
            out.append(f"{lead}{ANSI_ON.format(heat)}{body}{ANSI_OFF}")
        elif style == "markers":
            out.append(f"{lead}<<{body}>>")
        else:
            raise UserError(f"unknown style {style!r}; use markers or ansi")
        i = j
    return "".join(out)


def strip_markers(text: str) -> str:
    """Inverse of the ``markers`` style, for showing the same context without hints."""
    return re.sub(r"<<(.*?)>>", r"\1", text, flags=re.S)


__all__ = ["token_activations", "cached_token_activations", "render", "compute_token_activations", "strip_markers"]
