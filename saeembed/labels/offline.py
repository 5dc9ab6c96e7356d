"""Offline latent labels: distinctive tokens of each latent's top-activating contexts (c-TF-IDF).

No LLM is needed, so every shipped SAE can carry labels. For each latent we take its ``top_n``
highest-activating tokens in an activation cache (see :mod:`saeembed.train`), look at the
activating token and a small window around it, and score each term (normalised token, or the
bigram ending at the activating token) by

    score(term) = tf(term in the latent's top contexts) × log(1 + N / freq(term in all cached tokens))

so words that merely are frequent (``the``, ``.``) lose to words specific to the latent. The
label is the best three terms (``"dog, dogs, puppy"``); the description adds the share of top
contexts containing the best term and one top context with the activating token in ⟦brackets⟧.
``score`` is left empty: the share says how concentrated a latent is, not whether the label
names it, so the label stays unscored until its detection AUC is measured
(:mod:`saeembed.labels.score`: ``labels score CORPUS``, ``scripts/score_shipped_labels.py``).
Latents that never fire on the cache are labelled ``"(dead)"``.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl
import torch

from ..labelrule import DEAD_LABEL
from ..store import OFFLINE_LABEL_SOURCE

LABEL_SOURCE = OFFLINE_LABEL_SOURCE
LABEL_COLUMNS = {"feature_id": pl.Int32, "label": pl.String, "label_source": pl.String, "score": pl.Float64,
                 "density": pl.Float64, "description": pl.String}


def _normalise_vocab(tokenizer: Any) -> tuple[np.ndarray, list[str]]:
    """Map every token id to a normalised term id (decoded, stripped, lower-cased).

    Why: ``" Dog"``, ``"dog"`` and ``"Dog"`` are one concept for a label; counting them apart
    would split the term frequency and produce labels like ``"dog, Dog, dog"``.
    """
    n = len(tokenizer)
    strings = tokenizer.batch_decode([[i] for i in range(n)])
    terms: dict[str, int] = {}
    tid = np.zeros(n, np.int32)
    for i, s in enumerate(strings):
        t = s.strip().lower()
        if not t:
            t = repr(s) if s else "<empty>"
        tid[i] = terms.setdefault(t, len(terms))
    return tid, list(terms)


def collect_top_activations(sae: Any, cache: Any, top_n: int = 24, batch_size: int = 4096,
                            max_tokens: int | None = None, progress: Callable[[str], None] | None = None
                            ) -> dict[str, np.ndarray]:
    """Encode every cached token once; per latent keep the ``top_n`` activations and the fire count.

    Returns ``top_rows`` [d_sae, top_n] (global row index, -1 = none), ``top_vals``, ``counts``
    [d_sae], and the concatenated ``tok``/``doc``/``pos`` arrays of the cache for context lookup.
    """
    d_sae = sae.d_sae
    counts = np.zeros(d_sae, np.int64)
    top_vals = torch.full((d_sae, top_n), -1.0)
    top_rows = torch.full((d_sae, top_n), -1, dtype=torch.long)
    toks, docs, poss = [], [], []
    offset = 0
    t0 = time.time()
    with torch.no_grad():
        for i in range(len(cache.paths)):
            c = cache.load(i)
            toks.append(c["tok"]), docs.append(c["doc"]), poss.append(c["pos"])
            acts = torch.from_numpy(c["acts"])
            for s in range(0, len(acts), batch_size):
                a = sae.encode(acts[s:s + batch_size].float())
                vals, idx = a.topk(min(sae.cfg.k or 64, d_sae), dim=-1)
                keep = vals > 0
                lat = idx[keep]
                v = vals[keep]
                rows = (torch.arange(len(a)).unsqueeze(1).expand_as(idx)[keep] + offset + s)
                counts += np.bincount(lat.numpy(), minlength=d_sae)
                # merge into the running top-n per latent: sort new entries by (latent, -value)
                order = torch.argsort(lat * 1e6 - v.double().clamp(max=9e5), stable=True)
                lat, v, rows = lat[order], v[order], rows[order]
                uniq, cnt = torch.unique_consecutive(lat, return_counts=True)
                starts = torch.cumsum(cnt, 0) - cnt
                rank = torch.arange(len(lat)) - torch.repeat_interleave(starts, cnt)
                m = rank < top_n
                lat, v, rows, rank = lat[m], v[m], rows[m], rank[m]
                cand_v = torch.full((d_sae, top_n), -1.0)
                cand_r = torch.full((d_sae, top_n), -1, dtype=torch.long)
                cand_v[lat, rank] = v
                cand_r[lat, rank] = rows
                allv = torch.cat([top_vals, cand_v], 1)
                allr = torch.cat([top_rows, cand_r], 1)
                best = allv.topk(top_n, dim=1)
                top_vals, top_rows = best.values, allr.gather(1, best.indices)
            offset += len(acts)
            if progress:
                progress(f"labels: encoded {offset:,} tokens ({time.time() - t0:.0f} s)")
            if max_tokens and offset >= max_tokens:
                break
    return {"top_rows": top_rows.numpy(), "top_vals": top_vals.numpy(), "counts": counts,
            "n_tokens": np.array(offset), "tok": np.concatenate(toks)[:offset],
            "doc": np.concatenate(docs)[:offset], "pos": np.concatenate(poss)[:offset]}


def label_latents(sae: Any, cache: Any, tokenizer: Any, top_n: int = 24, before: int = 4, after: int = 1,
                  n_terms: int = 3, context_chars: int = 120, max_tokens: int | None = None,
                  progress: Callable[[str], None] | None = None) -> pl.DataFrame:
    """One row per latent (``feature_id`` 0..d_sae-1) with label, score, density and description.

    ``before``/``after`` tokens around the activating token count as context (at half weight);
    the activating token and the bigram ending at it count fully.
    """
    top = collect_top_activations(sae, cache, top_n=top_n, max_tokens=max_tokens, progress=progress)
    tok, doc = top["tok"], top["doc"]
    n_tokens = int(top["n_tokens"])
    tid, terms = _normalise_vocab(tokenizer)
    ttok = tid[tok]
    # background frequencies: unigrams over all cached tokens, bigrams within documents
    uni_bg = np.bincount(ttok, minlength=len(terms)).astype(np.float64)
    same = np.r_[False, doc[1:] == doc[:-1]]
    bigram_keys = ttok[:-1].astype(np.int64) * len(terms) + ttok[1:]
    bi_bg = Counter(bigram_keys[same[1:]].tolist())

    def context(row: int) -> str:
        lo = row
        while lo > 0 and doc[lo - 1] == doc[row] and row - lo < 24:
            lo -= 1
        hi = row
        while hi + 1 < n_tokens and doc[hi + 1] == doc[row] and hi - row < 8:
            hi += 1
        left = tokenizer.decode(tok[lo:row].tolist())[-context_chars:]
        mid = tokenizer.decode([int(tok[row])])
        right = tokenizer.decode(tok[row + 1:hi + 1].tolist())
        return (left + "⟦" + mid + "⟧" + right).replace("\n", " ").strip()

    rows_out = []
    for j in range(sae.d_sae):
        cnt = int(top["counts"][j])
        density = cnt / max(n_tokens, 1)
        rows = [int(r) for r in top["top_rows"][j] if r >= 0]
        if cnt == 0 or not rows:
            rows_out.append((j, DEAD_LABEL, LABEL_SOURCE, 0.0, 0.0,
                             f"never fired on the {n_tokens:,} tokens labelling read"))
            continue
        tf: dict[tuple, float] = defaultdict(float)
        present: dict[tuple, int] = defaultdict(int)
        for r in rows:
            seen: dict[tuple, float] = {}
            t = int(ttok[r])
            seen[("u", t)] = 1.0
            if r > 0 and doc[r - 1] == doc[r]:
                seen[("b", int(ttok[r - 1]), t)] = 1.0
            for q in range(max(0, r - before), min(n_tokens, r + after + 1)):
                if q != r and doc[q] == doc[r]:
                    key = ("u", int(ttok[q]))
                    seen[key] = max(seen.get(key, 0.0), 0.5)
            for key, w in seen.items():
                tf[key] += w
                present[key] += 1
        scored = []
        for key, f in tf.items():
            if key[0] == "u":
                bg = uni_bg[key[1]]
                text = terms[key[1]]
            else:
                bg = bi_bg.get(key[1] * len(terms) + key[2], 1)
                text = f"{terms[key[1]]} {terms[key[2]]}"
            if f < 2 and len(rows) >= 4:  # a term seen in one context is noise, not a concept
                continue
            scored.append((f / len(rows) * np.log1p(n_tokens / max(bg, 1.0)), text, key))
        scored.sort(key=lambda x: -x[0])
        picked: list[str] = []
        best_key = None
        for _, text, key in scored:
            if text in picked or any(text in p.split(" ") for p in picked):
                continue
            picked.append(text)
            best_key = best_key or key
            if len(picked) == n_terms:
                break
        if not picked:
            t = int(ttok[rows[0]])
            picked, best_key = [terms[t]], ("u", t)
        share = present[best_key] / len(rows)
        desc = (f"top term in {share:.0%} of the {len(rows)} top contexts; fires on {density:.3%} of tokens; "
                f"top context: {context(rows[0])}")
        # quote terms that are bare punctuation or hold a comma, so the comma-joined label stays readable
        shown = [t if any(ch.isalnum() for ch in t) and "," not in t else f"'{t}'" for t in picked]
        rows_out.append((j, ", ".join(shown), LABEL_SOURCE, None, float(density), desc))
    return pl.DataFrame(rows_out, schema=LABEL_COLUMNS, orient="row")


def write_labels(labels: pl.DataFrame, path: str | Path) -> Path:
    """Write ``labels.parquet`` atomically (tmp + rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    labels.write_parquet(tmp, compression="zstd")
    tmp.replace(path)
    return path


__all__ = ["LABEL_SOURCE", "collect_top_activations", "label_latents", "write_labels"]
