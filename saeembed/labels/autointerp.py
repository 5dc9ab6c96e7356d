"""LLM auto-interpretation of latents: explain from highlighted examples, score by detection.

For each latent of a corpus:

1. **Sample.** Documents where the latent fires are ranked by their stored max activation and cut
   into deciles; examples are drawn across deciles (top first) so the label covers the latent's
   whole range, not just its strongest, often atypical, activations. Non-activating documents of
   the same corpus are drawn as contrast.
2. **Highlight.** Per-token activations are recomputed (:mod:`saeembed.highlight`) and each
   example is cut to a window around its strongest token, activating tokens marked ``<<so>>``.
3. **Explain.** The LLM answers ``Label: ...`` / ``Description: ...``. With ``candidates > 1``
   each candidate sees a different sample of the explanation pool.
4. **Score by detection.** A held-out, balanced set (activating + non-activating, shown without
   markers, never used for explaining) is given to the LLM with the candidate label; it names the
   examples that show the concept. Accuracy, precision, recall and F1 against the truth measure
   how well the label *predicts* the latent, which is what users rely on when they search by
   label. The best candidate by F1 is stored as ``label_source = "llm:<model>"``, with
   ``score`` = its detection AUC on the same held-out windows (the measure every label source is
   scored by, :mod:`saeembed.labels.score`) and the F1 in the description.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from ..errors import UserError
from ..llm import LLM
from ..options import option
from ..store.corpusinfo import corpus_info
from ..store.handle import as_store
from .catalog import write_labels

if TYPE_CHECKING:
    from ..store.handle import Store

SYSTEM = ("You are a careful interpretability researcher. You explain what a latent feature of a language "
          "model detects, from text examples. Answer briefly and exactly in the requested format.")


@dataclass
class AutoInterpConfig:
    """Sampling and prompting knobs; the defaults keep one latent at ~4 short LLM calls."""

    n_explain: int = option(8, "activating examples shown to the explainer", "--examples", min=1)
    n_contrast: int = option(3, "non-activating examples shown to the explainer", "--contrast", min=0)
    n_holdout: int = option(5, "held-out activating (and as many non-activating) examples for detection scoring",
                            "--holdout", min=1)
    candidates: int = option(1, "labels proposed per latent; the best by detection F1 is kept", min=1)
    context_before: int = option(24, "tokens kept before an example's strongest token", cli=False)
    context_after: int = option(8, "tokens kept after an example's strongest token", cli=False)
    explain_tokens: int = option(64, "max_tokens of the explanation", cli=False)
    detect_tokens: int = option(32, "max_tokens of the detection answer", cli=False)
    temperature: float = option(0.0, "sampling temperature of the explainer", cli=False)
    seed: int = option(0, "random seed of the example sampling")
    feature_chunk: int = option(16, "latents whose token activations are recomputed together", cli=False)


# ------------------------------------------------------------------------------- selection -----
def active_features(store: Store | str | Path, corpus: str, min_docs: int = 5,
                    limit: int | None = None) -> pl.DataFrame:
    """Latents firing in at least ``min_docs`` documents of ``corpus``, most frequent first."""
    st = as_store(store)
    info = corpus_info(st, corpus)
    q = """SELECT a.feature_id, count(*) AS n_docs FROM activations a JOIN documents d USING (doc_id)
           WHERE d.corpus_id = ? GROUP BY a.feature_id HAVING count(*) >= ? ORDER BY n_docs DESC, feature_id"""
    df = st.sql(q, [info.corpus_id, int(min_docs)])
    return df.head(limit) if limit else df


def _stratified(rng: np.random.Generator, doc_ids: np.ndarray, deciles: np.ndarray, n: int) -> list[int]:
    """Up to ``n`` documents drawn round-robin across deciles, strongest decile first."""
    pools = {d: list(rng.permutation(doc_ids[deciles == d])) for d in sorted(set(deciles.tolist()), reverse=True)}
    out: list[int] = []
    while len(out) < n and any(pools.values()):
        for d in list(pools):
            if pools[d] and len(out) < n:
                out.append(int(pools[d].pop()))
    return out


@dataclass
class _Sample:
    feature_id: int
    n_active: int
    explain_pool: list[int]   # activating docs available for explanations
    holdout_pos: list[int]
    holdout_neg: list[int]
    contrast: list[int]
    deciles: dict[int, int]


def _sample(st: Store, corpus_id: int, fid: int, cfg: AutoInterpConfig) -> _Sample | None:
    acts = st.sql("""SELECT a.doc_id, a.value FROM activations a JOIN documents d USING (doc_id)
                     WHERE d.corpus_id = ? AND a.feature_id = ? ORDER BY a.value, a.doc_id""", [corpus_id, fid])
    n = acts.height
    if n < 2:
        return None
    rng = np.random.default_rng([cfg.seed, fid])
    ids = acts["doc_id"].to_numpy()
    dec = (np.arange(n) * 10 // n).astype(int)  # 0 = weakest decile, 9 = strongest
    n_hold = max(1, min(cfg.n_holdout, n // 3))
    hold = _stratified(rng, ids, dec, n_hold)
    rest = np.array([i for i in ids if int(i) not in set(hold)])
    rest_dec = np.array([dec[k] for k, i in enumerate(ids) if int(i) not in set(hold)])
    pool = _stratified(rng, rest, rest_dec, len(rest))
    n_neg = n_hold + cfg.n_contrast
    neg = st.sql("""SELECT doc_id FROM documents WHERE corpus_id = ? AND doc_id NOT IN
                    (SELECT doc_id FROM activations WHERE feature_id = ?)
                    ORDER BY hash(doc_id + ?) LIMIT ?""", [corpus_id, fid, cfg.seed, n_neg])["doc_id"].to_list()
    return _Sample(fid, n, pool, hold, neg[:n_hold], neg[n_hold:], {int(i): int(d) for i, d in zip(ids, dec)})


# ------------------------------------------------------------------------------- examples ------
def _window_text(tokens: pl.DataFrame, doc_id: int, fid: int, cfg: AutoInterpConfig, markers: bool) -> str:
    """A window around the strongest token (or the start, for non-activating docs), maybe marked."""
    sel = tokens.filter((pl.col("doc_id") == doc_id) & (pl.col("feature_id") == fid)).sort("position")
    if sel.height == 0:
        return ""
    acts = sel["activation"].to_numpy()
    span = cfg.context_before + cfg.context_after + 1
    centre = int(acts.argmax()) if acts.max() > 0 else 0
    lo = max(0, centre - cfg.context_before) if acts.max() > 0 else 0
    hi = min(sel.height, max(lo + span, centre + cfg.context_after + 1))
    lo = max(0, min(lo, hi - span))
    win = sel.slice(lo, hi - lo)
    from ..highlight.recompute import render

    text = render(win, doc_id, fid, style="markers") if markers else "".join(win["token"].to_list())
    text = " ".join(text.split())
    return ("… " if lo > 0 else "") + text + (" …" if hi < sel.height else "")


def explain_prompt(positives: list[str], contrast: list[str]) -> list[dict[str, str]]:
    """Chat messages asking for a label and a one-sentence description."""
    lines = ["Texts where the feature fires; the tokens where it fires are marked <<like this>>:"]
    lines += [f"{i + 1}. {t}" for i, t in enumerate(positives)]
    if contrast:
        lines += ["", "Texts where the feature does not fire:"]
        lines += [f"- {t}" for t in contrast]
    lines += ["", "What does the feature detect? Reply in exactly two lines:",
              "Label: <a short label of 2 to 6 words>", "Description: <one sentence>"]
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


def detect_prompt(label: str, description: str, texts: list[str]) -> list[dict[str, str]]:
    """Chat messages asking which numbered texts show the labelled concept."""
    lines = [f"A feature detects: {label}." + (f" {description}" if description else ""), "",
             "Which of these texts contain it?"]
    lines += [f"{i + 1}. {t}" for i, t in enumerate(texts)]
    lines += ["", "Answer only with the numbers of the texts that contain it, separated by commas, or 'none'."]
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


def parse_explanation(text: str) -> tuple[str, str]:
    """(label, description) from a reply; tolerant of chatty models that ignore the format."""
    label_m = re.search(r"label\s*[:：]\s*(.+)", text, flags=re.I)
    desc_m = re.search(r"description\s*[:：]\s*(.+)", text, flags=re.I)
    desc = desc_m.group(1).strip()[:300] if desc_m else ""
    if label_m:
        label = label_m.group(1)
    else:  # free text: its first line is the description, its head the label
        lines = [ln for ln in text.splitlines() if ln.strip() and not re.match(r"\s*description\s*[:：]", ln, re.I)]
        label = lines[0] if lines else ""
        desc = desc or label.strip()[:300]
        label = re.split(r"[.,;:(]| which | that ", label)[0]
    label = re.sub(r"[<>*\"`]", "", label).strip()
    label = re.sub(r"^(the |this )?(latent |feature )?(detects|fires on|is about|represents)\s+(the )?", "", label,
                   flags=re.I)
    label = " ".join(label.split()[:8]).strip(".").strip()[:80]
    return (label or "(no label)"), desc


def parse_detection(text: str, n: int) -> set[int]:
    """0-based indices the reply names (numbers 1..n); 'none' or nothing parseable is the empty set."""
    return {int(m) - 1 for m in re.findall(r"\b(\d{1,3})\b", text) if 1 <= int(m) <= n}


def label_aucs(labels: list[str], truths: list[list[bool]], texts: list[list[str]]) -> list[float | None]:
    """The label's detection AUC on its held-out windows (:mod:`saeembed.labels.score`): the same
    measure every other label source is scored by, so analyses can compare them (None when a side
    is empty)."""
    from .score import auc, embed_texts

    lab = embed_texts(labels)
    win = embed_texts([t for ts in texts for t in ts])
    out: list[float | None] = []
    at = 0
    for i, truth in enumerate(truths):
        sims = win[at:at + len(truth)] @ lab[i]
        at += len(truth)
        mask = np.array(truth, bool)
        out.append(auc(sims[mask], sims[~mask]) if mask.any() and (~mask).any() else None)
    return out


def detection_scores(predicted: set[int], truth: list[bool]) -> dict[str, float]:
    tp = sum(1 for i, t in enumerate(truth) if t and i in predicted)
    fp = sum(1 for i, t in enumerate(truth) if not t and i in predicted)
    fn = sum(1 for i, t in enumerate(truth) if t and i not in predicted)
    tn = len(truth) - tp - fp - fn
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return {"f1": f1, "accuracy": (tp + tn) / len(truth) if truth else 0.0, "precision": prec, "recall": rec}


# ------------------------------------------------------------------------------- driver --------
RESULT_SCHEMA = {"feature_id": pl.Int32, "candidate": pl.Int32, "label": pl.String, "description": pl.String,
                 "auc": pl.Float64, "f1": pl.Float64, "accuracy": pl.Float64, "precision": pl.Float64,
                 "recall": pl.Float64,
                 "n_active_docs": pl.Int64, "density": pl.Float64, "n_holdout": pl.Int32}


def label_features(store: Store | str | Path, corpus: str, feature_ids: list[int], llm: LLM,
                   config: AutoInterpConfig | None = None, write: bool = True,
                   progress: bool = False) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Label latents with an LLM; returns (best per latent, every candidate).

    The best candidate per latent is written to ``features`` as ``llm:<model>`` (score = detection
    F1) unless ``write`` is false. Latents firing in fewer than 2 documents are skipped (reported
    on stderr): there is nothing to hold out.
    """
    cfg = config or AutoInterpConfig()
    if cfg.candidates < 1 or cfg.n_explain < 1 or cfg.n_holdout < 1:
        raise UserError("--candidates, --examples and --holdout must be at least 1")
    st = as_store(store)
    info = corpus_info(st, corpus)
    d_sae = int(info.d_sae or 0)
    bad = [f for f in feature_ids if not 0 <= int(f) < d_sae]
    if bad:
        raise UserError(f"feature {bad[0]} is outside 0..{d_sae - 1} for SAE {info.sae}; check --feature")
    n_docs = int(info.n_docs)
    rows: list[dict[str, Any]] = []
    skipped: list[int] = []
    fids = list(dict.fromkeys(int(f) for f in feature_ids))
    t0 = time.perf_counter()
    for c0 in range(0, len(fids), cfg.feature_chunk):
        chunk = fids[c0:c0 + cfg.feature_chunk]
        samples = []
        for f in chunk:
            s = _sample(st, info.corpus_id, f, cfg)
            (samples.append(s) if s else skipped.append(f))
        if not samples:
            continue
        docs = sorted({d for s in samples for d in (s.explain_pool[: cfg.n_explain * cfg.candidates]
                                                    + s.holdout_pos + s.holdout_neg + s.contrast)})
        from ..highlight.recompute import token_activations

        tokens = token_activations(st, docs, [s.feature_id for s in samples])
        jobs = []
        for s in samples:
            f = s.feature_id
            pool = s.explain_pool[: cfg.n_explain * cfg.candidates]
            contrast = [_window_text(tokens, d, f, cfg, False) for d in s.contrast]
            for c in range(cfg.candidates):
                if c == 0:
                    pick = pool[: cfg.n_explain]
                else:
                    rng = np.random.default_rng([cfg.seed, f, c])
                    chosen = rng.choice(len(pool), min(cfg.n_explain, len(pool)), replace=False)
                    pick = [pool[i] for i in sorted(chosen)]
                pick = sorted(pick, key=lambda d: -s.deciles[d])  # strongest first, as explainers expect
                texts = [_window_text(tokens, d, f, cfg, True) for d in pick]
                jobs.append((s, c, explain_prompt(texts, contrast)))
        replies = llm.map(lambda j: llm.complete(j[2], cfg.explain_tokens, cfg.temperature if j[1] == 0 else
                                                 max(cfg.temperature, 0.7)).text, jobs)
        det_jobs = []
        for (s, c, _), reply in zip(jobs, replies):
            label, desc = parse_explanation(reply)
            f = s.feature_id
            items = [(d, True) for d in s.holdout_pos] + [(d, False) for d in s.holdout_neg]
            order = np.random.default_rng([cfg.seed, f, 99]).permutation(len(items))
            items = [items[i] for i in order]
            texts = [_window_text(tokens, d, f, cfg, False) for d, _ in items]
            det_jobs.append((s, c, label, desc, [t for _, t in items], detect_prompt(label, desc, texts), texts))
        answers = llm.map(lambda j: llm.complete(j[5], cfg.detect_tokens, 0.0).text, det_jobs)
        aucs = label_aucs([j[2] for j in det_jobs], [j[4] for j in det_jobs], [j[6] for j in det_jobs])
        for (s, c, label, desc, truth, _, _), ans, auc_ in zip(det_jobs, answers, aucs):
            sc = detection_scores(parse_detection(ans, len(truth)), truth)
            rows.append({"feature_id": s.feature_id, "candidate": c, "label": label, "description": desc,
                         "auc": auc_, **sc,
                         "n_active_docs": s.n_active, "density": s.n_active / max(n_docs, 1),
                         "n_holdout": len(truth)})
        if progress:
            print(f"labelled {min(c0 + len(chunk), len(fids))}/{len(fids)} latents "
                  f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    if skipped:
        print(f"skipped {len(skipped)} latents firing in fewer than 2 documents of {corpus!r}: "
              f"{', '.join(map(str, skipped[:10]))}", file=sys.stderr)
    allc = pl.DataFrame(rows, schema=RESULT_SCHEMA)
    best = (allc.sort(["feature_id", "f1", "accuracy", "candidate"], descending=[False, True, True, False])
            .unique("feature_id", keep="first", maintain_order=True))
    if write and best.height:
        write_labels(st, info.sae, best.select(
            "feature_id", "label", pl.lit(f"llm:{llm.name}").alias("label_source"), pl.col("auc").alias("score"),
            "density", pl.concat_str([pl.col("description"), pl.format("LLM detection F1 {}", pl.col("f1").round(2))],
                                     separator=" · ").alias("description")))
    return best, allc


__all__ = ["AutoInterpConfig", "label_features", "active_features", "explain_prompt", "detect_prompt",
           "parse_explanation", "parse_detection", "detection_scores"]
