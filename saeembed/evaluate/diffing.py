"""Dataset diffing: do the top differences of one half of the documents replicate in the other?"""

from __future__ import annotations

import numpy as np
import polars as pl

from ..analysis import diff
from ..analysis.common import bh_qvalues
from ..analysis.diff import two_proportion_test
from ..store.corpusinfo import corpus_info
from .harness import Harness
from .metrics import log

# ------------------------------------------------------------------------------- diffing -------
DIFF_PAIRS = [("alpaca_verbose", "alpaca_concise", "AlpacaEval GPT-4-turbo verbose vs concise"),
              ("m4_llama2", "m4_human", "M4 Llama-2 vs human")]
REPLICATION_TOP = 50


def _half_counts(h: Harness, name: str, half: int) -> tuple[np.ndarray, int]:
    """Per-latent document counts (max-pool > 0) over the rows of one half (row_idx parity)."""
    info = corpus_info(h.store, name)
    df = h.store.sql("SELECT feature_id, count(*) AS n FROM activations WHERE doc_id BETWEEN $lo AND $hi "
                     "AND (doc_id & 1) = $half AND value > 0 GROUP BY feature_id",
                     {"lo": info.lo, "hi": info.hi, "half": half})
    counts = np.zeros(int(info.d_sae), np.int64)
    counts[df["feature_id"].to_numpy()] = df["n"].to_numpy()
    n = h.store.sql("SELECT count(*) AS n FROM documents WHERE corpus_id = $c AND (row_idx & 1) = $half",
                    {"c": info.corpus_id, "half": half})["n"][0]
    return counts, int(n)


def _significant_diffs(ka: np.ndarray, na: int, kb: np.ndarray, nb: int,
                       fdr: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(signed frequency difference, BH-significant mask) of A vs B for every latent, with diff's own test."""
    _, p = two_proportion_test(ka, na, kb, nb)
    tested = (ka + kb) > 0
    q = np.ones(len(ka))
    q[tested] = bh_qvalues(p[tested])
    return ka / na - kb / nb, q <= fdr


def eval_diffing(h: Harness) -> tuple[pl.DataFrame, dict[str, pl.DataFrame]]:
    summary, tops = [], {}
    for a, b, title in DIFF_PAIRS:
        h.ensure(a)
        h.ensure(b)
        # the paper's diff: these pairs differ in length by construction (verbose vs concise), see the length task
        res = diff(h.store, [a, b], min_diff=0.0, top=None, examples=0, control="none", keep_ubiquitous=True)
        tops[title] = (res.filter(pl.col("diff").abs() > 0).sort("diff", descending=True)
                       .select("target", "feature_id", "label", "freq_target", "freq_other", "diff", "q_value")
                       .head(20))
        halves = [(_half_counts(h, a, s), _half_counts(h, b, s)) for s in (0, 1)]
        (ka0, na0), (kb0, nb0) = halves[0]
        (ka1, na1), (kb1, nb1) = halves[1]
        d0, sig0 = _significant_diffs(ka0, na0, kb0, nb0)
        d1, sig1 = _significant_diffs(ka1, na1, kb1, nb1)
        cand = np.flatnonzero(sig0)
        top = cand[np.argsort(-np.abs(d0[cand]))][:REPLICATION_TOP]
        replicated = (np.sign(d1[top]) == np.sign(d0[top])) & sig1[top]
        n_sig = int(sig0.sum())
        summary.append({"comparison": title, "docs per side": (na0 + na1, nb0 + nb1).__str__(),
                        "significant latents (half 1)": n_sig, "top-N tested": len(top),
                        "replicated in half 2": float(replicated.mean()) if len(top) else float("nan"),
                        "significant (full)": int((res["q_value"] <= 0.05).sum())})
        log(f"diffing {title}: {len(top)} top latents, replication {summary[-1]['replicated in half 2']:.2f}")
    return pl.DataFrame(summary), tops
