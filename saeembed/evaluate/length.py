"""Length: does diff's answer survive a difference in document length?

Max-pooled presence grows with length, so a corpus of longer documents has more of every latent.
Three checks, each run for every way of comparing (``--control none``, the default length control
and the alternative that was measured against it):

1. **null**: corpus B = documents of corpus A's kind, each two of them joined, so B differs from A
   only in length; how many latents does diff call significantly more frequent in B (q < 0.05)?
2. **planted**: a phrase replaces the last words of a quarter of the documents of a corpus of the
   longer kind (so it does not make them longer); is one of the phrase's latents (present in >= 90 %
   of the planted documents and >= 0.5 more often than in the others) in the top 3 against A, with
   q < 1e-6? The ``appended`` variant (tweets) appends the phrase instead, so the documents
   that carry it are also longer.
3. **AlpacaEval**: two generators answering the same instructions at different lengths; of the 15
   rows diff ranks first, the share whose difference keeps its sign and at least half its size on the
   instructions where both answers have about the same length (ratio within 1.25): the length-matched
   pairs are the reference, since there length cannot explain a difference.

Development (where the method and its settings were chosen): tweets, and llama-2-70b-chat vs
gpt-3.5-turbo-1106. Held out: reddit comments, news, and gpt-3.5-turbo-1106 vs alpaca-7b (a pair the
method never saw, in which gpt-3.5 is the longer side; it shares gpt-3.5's answers with the development
pair, because encoding a fully separate pair did not fit the CPU time). AlpacaEval corpora hold the
answers to the first 512 instructions.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import polars as pl

from ..analysis import diff
from .harness import Harness
from .metrics import log

NULL_CASES = (("tweets", "dev"), ("reddit", "held-out"), ("news", "held-out"))
APPENDED_CASES = ("tweets",)
ALPACA_CASES = (("alpaca_llama2", "alpaca_gpt35", "dev"), ("alpaca_gpt35", "alpaca_7b", "held-out"))
# what each row of the tables ran: diff's keyword arguments
METHODS: dict[str, dict[str, Any]] = {
    "none": {"control": "none"},
    "length (logistic, default)": {"control": "length"},
    "length-cmh": {"control": "length-cmh"},
}
PAIRED_METHODS: dict[str, dict[str, Any]] = {
    "paired, none (McNemar)": {"control": "none", "paired": True, "pair_key": "instruction_id"},
    "paired, length": {"control": "length", "paired": True, "pair_key": "instruction_id"},
}
MATCH_RATIO = 1.25  # answers whose lengths differ by at most this factor count as length-matched
TOP = 15
PLANT_Q = 1e-6


def _presence(h: Harness, name: str) -> tuple[Any, np.ndarray, pl.DataFrame]:
    """(binary CSR [docs, d_sae], content tokens per document, documents) of one stored corpus."""
    mat, ids = h.store.embeddings(h.stored(name))
    docs = h.store.documents(h.stored(name))
    assert docs["doc_id"].to_list() == ids.tolist()
    return (mat > 0).astype(np.float64).tocsc(), docs["n_tokens"].to_numpy().astype(np.float64), docs


def phrase_latents(h: Harness, name: str) -> set[int]:
    """Latents the planted phrase makes present: in >= 90 % of the planted documents, and in a share of
    them at least 0.5 above their share of the corpus' other documents."""
    x, _, docs = _presence(h, name)
    planted = np.array([bool(json.loads(m)["planted"]) for m in docs["meta"].to_list()])
    inside = np.asarray(x[planted].sum(axis=0)).ravel() / planted.sum()
    outside = np.asarray(x[~planted].sum(axis=0)).ravel() / (~planted).sum()
    return set(np.flatnonzero((inside >= 0.9) & (inside - outside >= 0.5)).tolist())


def _null_row(h: Harness, kind: str, role: str, method: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    short, joined = h.stored(f"len_{kind}_short"), h.stored(f"len_{kind}_joined")
    everything = diff(h.store, [joined, short], target=joined, fdr=None, min_diff=-2.0, top=None, examples=0,
                      keep_ubiquitous=True, **kwargs)
    sig = everything.filter((pl.col("q_value") < 0.05) & (pl.col("adj_diff") > 0))
    reverse = diff(h.store, [joined, short], target=short, fdr=0.05, min_diff=0.0, top=None, examples=0,
                   keep_ubiquitous=True, **kwargs)
    return {"case": f"{kind}: joined vs single", "part": role, "method": method, "tested": everything.height,
            "significant for the longer": sig.height, "share": f"{sig.height / max(everything.height, 1):.2%}",
            "significant for the shorter": reverse.height}


def _planted_row(h: Harness, kind: str, part: str, role: str, method: str, kwargs: dict[str, Any],
                 phrase: set[int]) -> dict[str, Any]:
    short, planted = h.stored(f"len_{kind}_short"), h.stored(f"len_{kind}_{part}")
    res = diff(h.store, [planted, short], target=planted, top=None, examples=0, **kwargs)
    hits = res.filter(pl.col("feature_id").is_in(sorted(phrase)))
    best = hits.row(0, named=True) if hits.height else None
    top3 = res.head(3)
    found = top3.filter(pl.col("feature_id").is_in(sorted(phrase)) & (pl.col("q_value") < PLANT_Q)).height > 0
    return {"case": f"{kind}: phrase {'replacing words' if part == 'planted' else 'appended'} vs single",
            "part": role, "method": method, "phrase latents": len(phrase),
            "best phrase rank": best["rank"] if best else None, "its q": f"{best['q_value']:.1e}" if best else None,
            f"in top 3 with q < {PLANT_Q:g}": found}


def eval_null_planted(h: Harness) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The null and planted checks, every case × method."""
    null_rows, plant_rows = [], []
    for kind, role in NULL_CASES:
        parts = ["short", "joined", "planted"] + (["appended"] if kind in APPENDED_CASES else [])
        for part in parts:
            h.ensure(f"len_{kind}_{part}")
        phrases = {p: phrase_latents(h, f"len_{kind}_{p}") for p in parts[2:]}
        for method, kwargs in METHODS.items():
            null_rows.append(_null_row(h, kind, role, method, kwargs))
            for p in parts[2:]:
                plant_rows.append(_planted_row(h, kind, p, role, method, kwargs, phrases[p]))
            log(f"length null {kind} {method}: {null_rows[-1]['significant for the longer']} of "
                f"{null_rows[-1]['tested']}; planted {plant_rows[-1]['best phrase rank']}")
    return pl.DataFrame(null_rows), pl.DataFrame(plant_rows)


def matched_reference(h: Harness, a: str, b: str) -> tuple[np.ndarray, int, int]:
    """Per latent, freq in A minus freq in B over the length-matched instruction pairs; their number,
    and the number of instructions both generators answered."""
    xa, ta, da = _presence(h, a)
    xb, tb, db = _presence(h, b)
    ia = np.array([json.loads(m)["instruction_id"] for m in da["meta"].to_list()])
    ib = np.array([json.loads(m)["instruction_id"] for m in db["meta"].to_list()])
    common, pa, pb = np.intersect1d(ia, ib, return_indices=True)
    ratio = np.abs(np.log(np.maximum(ta[pa], 1) / np.maximum(tb[pb], 1)))
    m = ratio <= np.log(MATCH_RATIO)
    ref = (np.asarray(xa[pa[m]].sum(axis=0)).ravel() - np.asarray(xb[pb[m]].sum(axis=0)).ravel()) / max(m.sum(), 1)
    return ref, int(m.sum()), len(common)


def _alpaca_row(h: Harness, a: str, b: str, role: str, method: str, kwargs: dict[str, Any], ref: np.ndarray,
                n_matched: int) -> dict[str, Any]:
    res = diff(h.store, [h.stored(a), h.stored(b)], examples=0, **kwargs)
    top = res.sort(["adj_diff", "q_value"], descending=[True, False]).head(TOP)
    sign = np.where(top["target"].to_numpy() == h.stored(a), 1.0, -1.0)
    matched = sign * ref[top["feature_id"].to_numpy()]
    reported = top["adj_diff"].to_numpy()
    kept = (matched > 0) & (matched >= 0.5 * reported)
    by_target = top["target"].value_counts().sort("target")
    return {"case": f"{a} vs {b}", "part": role, "method": method, "matched pairs": n_matched,
            "significant rows": res.height,
            f"top-{TOP} targets": ", ".join(f"{t} {c}" for t, c in by_target.iter_rows()),
            f"top-{TOP} replicated": float(kept.mean()) if len(kept) else float("nan"),
            "mean reported": float(reported.mean()) if len(kept) else float("nan"),
            "mean matched": float(matched.mean()) if len(kept) else float("nan")}


def eval_alpaca(h: Harness) -> pl.DataFrame:
    """The AlpacaEval check, every generator pair × method (unpaired and paired)."""
    rows = []
    for a, b, role in ALPACA_CASES:
        h.ensure(a)
        h.ensure(b)
        ref, n_matched, _ = matched_reference(h, a, b)
        for method, kwargs in {**METHODS, **PAIRED_METHODS}.items():
            rows.append(_alpaca_row(h, a, b, role, method, kwargs, ref, n_matched))
            log(f"length alpaca {a} vs {b} {method}: replicated {rows[-1][f'top-{TOP} replicated']:.2f}")
    return pl.DataFrame(rows)


def eval_length(h: Harness) -> dict[str, pl.DataFrame]:
    null, planted = eval_null_planted(h)
    return {"null": null, "planted": planted, "alpaca": eval_alpaca(h)}


__all__ = ["eval_length", "eval_null_planted", "eval_alpaca", "matched_reference", "phrase_latents", "METHODS"]
