"""The optional LLM step of dataset diffing: from over-represented latents to verified hypotheses.

The paper's pipeline, on the result of :func:`saeembed.analysis.diff`, per target corpus:

1. **Contrastive relabelling.** A latent's stored label describes what it fires on anywhere; what
   matters here is what it says about *this* difference. Each of the top ``n_latents`` latents
   is shown to the LLM with documents of the target where it fires strongly (activating tokens
   marked ``<<…>>``) and documents of the other corpus where it does not fire, and relabelled.
2. **Summarisation.** The relabelled latents, with their frequencies on both sides, are
   summarised into at most ``n_hypotheses`` (≤ 10) hypotheses about how the target differs.
   The summariser cites the latents it draws on, which become the ``features`` column.
3. **Verification.** An LLM judge decides, for held-out documents of both sides (never shown in
   step 1), whether each document fits the hypothesis. The verified frequencies, their difference
   and a two-proportion p-value are reported, so a hypothesis the data does not support is seen
   to fail rather than silently kept.

Every call goes through :class:`saeembed.llm.LLM` (cache, retries, concurrency, usage report).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from ..errors import UserError
from ..highlight.snippets import highlighted_examples
from ..labels.autointerp import SYSTEM, detect_prompt, parse_detection, parse_explanation
from ..store.corpusinfo import corpus_info
from ..store.handle import as_store
from .diff import two_proportion_test

if TYPE_CHECKING:
    from ..llm import LLM
    from ..store.corpusinfo import CorpusInfo
    from ..store.handle import Store

SCHEMA = {"target": pl.String, "other": pl.String, "hypothesis": pl.String, "features": pl.List(pl.Int32),
          "freq_target": pl.Float64, "freq_other": pl.Float64, "diff": pl.Float64, "p_value": pl.Float64,
          "verified": pl.Boolean, "n_target": pl.Int64, "n_other": pl.Int64}
JUDGE_BATCH = 8  # documents per judge call: fewer calls, still short enough for small models
MAX_HYPOTHESES = 10


def relabel_prompt(positives: list[str], negatives: list[str], target: str, other: str) -> list[dict[str, str]]:
    """Chat messages asking what a latent marks in the target that the other corpus lacks."""
    lines = [f"A feature fires much more often in texts of corpus {target!r} than of corpus {other!r}.",
             f"Texts of {target!r} where it fires; the tokens where it fires are marked <<like this>>:"]
    lines += [f"{i + 1}. {t}" for i, t in enumerate(positives)]
    if negatives:
        lines += ["", f"Texts of {other!r} where it does not fire:"]
        lines += [f"- {t}" for t in negatives]
    lines += ["", f"What property of the {target!r} texts does the feature detect? Reply in exactly two lines:",
              "Label: <a short label of 2 to 6 words>", "Description: <one sentence>"]
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


def summary_prompt(items: list[tuple[str, float, float]], target: str, other: str, n: int) -> list[dict[str, str]]:
    """Chat messages asking for at most ``n`` hypotheses, each citing the numbered features."""
    lines = [f"These features of a language model occur more often in corpus {target!r} than in corpus {other!r} "
             "(share of documents in each):"]
    lines += [f"{i + 1}. {label} ({ft:.0%} vs {fo:.0%})" for i, (label, ft, fo) in enumerate(items)]
    lines += ["", f"Summarise how the texts of {target!r} differ from those of {other!r} in at most {n} hypotheses, "
              "one per line, each a short testable statement about a text, followed by the numbers of the "
              "features it rests on in brackets, like:", "- Texts apologise to the reader [1, 4]"]
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


def parse_hypotheses(text: str, n_items: int, limit: int) -> list[tuple[str, list[int]]]:
    """(hypothesis, cited 0-based item indices) per line of a summary reply, at most ``limit``."""
    out: list[tuple[str, list[int]]] = []
    for line in text.splitlines():
        m = re.match(r"\s*(?:[-*•]|\d{1,2}[.)])\s+(.+)", line)
        if not m:
            continue
        body = m.group(1).strip()
        cited: list[int] = []
        for group in re.findall(r"\[([^\]]*)\]", body):
            cited += [int(x) - 1 for x in re.findall(r"\d+", group) if 1 <= int(x) <= n_items]
        hyp = re.sub(r"\s*\[[^\]]*\]\s*", " ", body).strip().strip("*").strip()
        if len(hyp) >= 3:
            out.append((hyp[:200], sorted(set(cited))))
        if len(out) >= limit:
            break
    return out


def _clip(text: str, n: int = 400) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= n else text[:n] + "…"


def _sample_docs(store: Store, info: CorpusInfo, exclude: set[int], n: int, seed: int,
                 feature: int | None = None) -> list[int]:
    """Up to ``n`` doc ids of a corpus spread by hash, skipping ``exclude`` (and, given ``feature``,
    documents where that latent is present)."""
    not_active = ("AND doc_id NOT IN (SELECT doc_id FROM activations WHERE doc_id BETWEEN ? AND ? "
                  "AND feature_id = ? AND value > 0)") if feature is not None else ""
    params: list[Any] = [info.corpus_id] + ([info.lo, info.hi, feature] if feature is not None else [])
    ids = store.sql(f"SELECT doc_id FROM documents WHERE corpus_id = ? {not_active} "
                    f"ORDER BY hash(doc_id + {int(seed)}), doc_id LIMIT {int(n + len(exclude))}", params)
    return [int(d) for d in ids["doc_id"].to_list() if int(d) not in exclude][:n]


def diff_hypotheses(store: Store | Any, diff_result: pl.DataFrame, llm: LLM, *, n_latents: int = 20,
                    n_hypotheses: int = MAX_HYPOTHESES, n_examples: int = 4, n_verify: int = 24,
                    seed: int = 0, max_tokens: int = 300) -> pl.DataFrame:
    """Hypotheses about how each target corpus differs, each verified on held-out documents.

    ``diff_result`` is a frame from :func:`~saeembed.analysis.diff` (with its example doc ids).
    Returns one row per hypothesis: target, other, hypothesis, features (latent ids it cites),
    freq_target / freq_other (share of ``n_verify`` held-out documents per side the judge says fit
    it), diff, p_value (two-proportion test), verified (diff > 0 and p < 0.05), n_target, n_other.
    """
    if not 1 <= n_hypotheses <= MAX_HYPOTHESES:
        raise UserError(f"the number of hypotheses must be between 1 and {MAX_HYPOTHESES}")
    if n_latents < 1 or n_examples < 1 or n_verify < 1:
        raise UserError("n_latents, n_examples and n_verify must be at least 1")
    need = {"target", "other", "feature_id", "label", "freq_target", "freq_other", "examples_target"}
    if not need <= set(diff_result.columns):
        raise UserError("diff_hypotheses needs the frame diff() returns (with example documents)")
    st = as_store(store)
    rows: list[dict[str, Any]] = []
    for target in dict.fromkeys(diff_result["target"].to_list()):
        top = diff_result.filter(pl.col("target") == target).head(n_latents)
        if top.height == 0:
            continue
        other = top["other"].mode().sort()[0]
        infos = {target: corpus_info(st, target), other: corpus_info(st, other)}
        # 1. contrastive relabelling: strongest target documents vs other documents without the latent
        used: set[int] = set()
        jobs, pairs = [], []
        for r in top.iter_rows(named=True):
            pos = [int(d) for d in r["examples_target"][:n_examples]]
            neg = _sample_docs(st, infos[other], set(), n_examples, seed, feature=int(r["feature_id"]))
            used.update(pos + neg)
            jobs.append((r, pos, neg))
            pairs += [(d, int(r["feature_id"])) for d in pos]
        marked = highlighted_examples(st, pairs, shade=True)  # every firing run: more for the LLM to go on
        neg_text = dict(st.sql("SELECT doc_id, text FROM documents WHERE doc_id IN (SELECT unnest(?::BIGINT[]))",
                               [sorted({d for _, _, neg in jobs for d in neg})]).iter_rows())
        prompts = [relabel_prompt([marked[(d, int(r["feature_id"]))] for d in pos],
                                  [_clip(neg_text.get(d, ""), 200) for d in neg], target, other)
                   for r, pos, neg in jobs]
        replies = llm.map(lambda p: llm.complete(p, 64, 0.0).text, prompts)
        labels = [parse_explanation(t)[0] for t in replies]
        # 2. summarise into at most n_hypotheses, each citing the latents it rests on
        items = [(lab, float(r["freq_target"]), float(r["freq_other"])) for lab, (r, _, _) in zip(labels, jobs)]
        reply = llm.complete(summary_prompt(items, target, other, n_hypotheses), max_tokens, 0.0).text
        hyps = parse_hypotheses(reply, len(items), n_hypotheses)
        fids = [int(r["feature_id"]) for r, _, _ in jobs]
        if not hyps:  # the summariser ignored the format: test the relabelled latents themselves instead
            hyps = [(lab, [i]) for i, lab in enumerate(dict.fromkeys(labels)) if lab != "(no label)"][:n_hypotheses]
        # 3. verify on held-out documents of both sides
        held = {c: _sample_docs(st, infos[c], used, n_verify, seed + 1) for c in (target, other)}
        texts = dict(st.sql("SELECT doc_id, text FROM documents WHERE doc_id IN (SELECT unnest(?::BIGINT[]))",
                            [held[target] + held[other]]).iter_rows())
        judge_jobs = []
        for h, (hyp, _) in enumerate(hyps):
            for side in (target, other):
                for s in range(0, len(held[side]), JUDGE_BATCH):
                    batch = held[side][s:s + JUDGE_BATCH]
                    judge_jobs.append((h, side, len(batch),
                                       detect_prompt(hyp, "", [_clip(texts.get(d, "")) for d in batch])))
        answers = llm.map(lambda j: llm.complete(j[3], 32, 0.0).text, judge_jobs)
        hits = {(h, side): 0 for h in range(len(hyps)) for side in (target, other)}
        for (h, side, n, _), ans in zip(judge_jobs, answers):
            hits[(h, side)] += len(parse_detection(ans, n))
        nt, no = len(held[target]), len(held[other])
        for h, (hyp, cited) in enumerate(hyps):
            kt, ko = hits[(h, target)], hits[(h, other)]
            ft, fo = kt / max(nt, 1), ko / max(no, 1)
            _, p = two_proportion_test(np.array([kt]), max(nt, 1), np.array([ko]), max(no, 1))
            rows.append({"target": target, "other": other, "hypothesis": hyp, "features": [fids[i] for i in cited],
                         "freq_target": ft, "freq_other": fo, "diff": ft - fo, "p_value": float(p[0]),
                         "verified": bool(ft > fo and p[0] < 0.05), "n_target": nt, "n_other": no})
    out = pl.DataFrame(rows, schema=SCHEMA)
    return out.sort(["target", "diff"], descending=[False, True])


__all__ = ["diff_hypotheses", "parse_hypotheses", "relabel_prompt", "summary_prompt"]
