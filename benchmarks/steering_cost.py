"""What a one-word clustering query costs on top of the clustering: the reader's answer and the grounding check.

    python benchmarks/steering_cost.py --store STORE --corpus NAME [--query emotion --query target ...] [--k 4]

Timed in one process, in the order a first query meets them (wall and process CPU seconds, with the
1-minute load average):

- ``reader answer, cold``: the shipped reader loaded and asked once (one greedy answer of at most
  ``READER_TOKENS`` tokens), its disk cache a fresh temporary file;
- ``reader answer, disk cache``: the same question from a second process' point of view (a fresh LLM
  object on that cache file: no model load);
- ``corpus data``: the square-rooted token shares, the documents' MiniLM embeddings and the corpus'
  topics (k-means on MiniLM, named by c-TF-IDF), read or computed once per corpus and process;
- ``grounding check, cold``: the proposal and the random word proposals it is ranked against;
- ``grounding check, warm``: a second query of the same shape (the random proposals' figures are kept
  per corpus and process);
- ``cluster --query``: the whole call (answer from the disk cache, corpus data in memory) against
  ``cluster --unfiltered``.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(rows: list[tuple[str, float, float]], what: str, fn):
    t, c = time.perf_counter(), _cpu()
    out = fn()
    rows.append((what, time.perf_counter() - t, _cpu() - c))
    print(f"{what:<45} {rows[-1][1]:8.2f} s wall {rows[-1][2]:8.2f} s cpu", file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--query", action="append", help="one-word queries (default: emotion, target)")
    ap.add_argument("--k", type=int, default=4)
    args = ap.parse_args(argv)
    queries = args.query or ["emotion", "target"]

    from saeembed.analysis.axis import propose_poles, reader_answer
    from saeembed.analysis.cluster import cluster
    from saeembed.analysis.common import corpus_info
    from saeembed.analysis.facets import propose_facets
    from saeembed.analysis.proposals import SteerData
    from saeembed.api import open_store
    from saeembed.llm import make_llm

    st = open_store(args.store)
    info = corpus_info(st, args.corpus)
    rows: list[tuple[str, float, float]] = []
    proposals = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "answers.sqlite"
        llm = make_llm("local", cache=cache)
        for i, q in enumerate(queries):
            what = "reader answer, cold (model load + answer)" if i == 0 else "reader answer, model loaded"
            timed(rows, f"{what}: {q}", lambda q=q: reader_answer(llm, q))
        for q in queries:
            timed(rows, f"reader answer, disk cache: {q}", lambda q=q: reader_answer(make_llm("local", cache=cache), q))
            proposals[q] = propose_poles(q, llm) or propose_facets(q, llm)
    data = SteerData(st, info)
    timed(rows, "corpus data: token shares", lambda: data.matrix)
    timed(rows, "corpus data: MiniLM embeddings", lambda: data.emb)
    timed(rows, "corpus data: topics", lambda: data.topics())
    for q in queries:
        proposal = proposals[q]
        if proposal is None:
            print(f"{q}: the reader named no poles or categories", file=sys.stderr)
            continue
        timed(rows, f"grounding check, first of its shape: {q}", lambda p=proposal, q=q: data.check(p, q))
        timed(rows, f"grounding check, again: {q}", lambda p=proposal, q=q: data.check(p, q))
    for q in queries:
        timed(rows, f"cluster --query {q} --k {args.k} (corpus data in memory)",
              lambda q=q: cluster(st, args.corpus, query=q, k=args.k))
    timed(rows, f"cluster --unfiltered --k {args.k}", lambda: cluster(st, args.corpus, unfiltered=True, k=args.k))
    print(f"| step ({info['n_docs']} documents, load {os.getloadavg()[0]:.2f}) | wall s | cpu s |\n|---|---|---|")
    for what, wall, cpu in rows:
        print(f"| {what} | {wall:.2f} | {cpu:.2f} |")


if __name__ == "__main__":
    main()
