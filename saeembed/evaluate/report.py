"""``python -m saeembed.evaluate``: run the tasks, print and write the Markdown report and its JSON twin."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import polars as pl

from .clustering import eval_clustering
from .correlation import eval_correlation
from .diffing import eval_diffing
from .harness import Harness
from .labels import TOP as LABEL_TOP
from .labels import eval_label_quality
from .length import eval_length
from .metrics import markdown
from .retrieval import eval_retrieval, retrieval_table
from .speed import eval_speed
from .steering import eval_steering, steering_section, with_other_halves
from .tasks import DEFAULT_DATA, RETRIEVAL_TASKS, STYLE_TASKS

# ------------------------------------------------------------------------------- main ----------
TASKS = ("retrieval", "style", "labels", "clustering", "steering", "diffing", "length", "correlation", "speed")
# the heading each task's section starts with, to carry sections of tasks not run over from the last report
HEADINGS = {"retrieval": "### Property retrieval", "style": "### Style retrieval", "labels": "### Label quality",
            "clustering": "### Targeted clustering", "steering": "### Query steering",
            "diffing": "### Dataset diffing", "length": "### Length control",
            "correlation": "### Correlations", "speed": "### Encode speed"}


def previous_sections(report: str) -> dict[str, str]:
    """Task → its section in an earlier ``evaluation.md`` (sections start with the HEADINGS)."""
    out: dict[str, list[str]] = {}
    task = None
    for line in report.splitlines():
        if line.startswith("### "):
            found = [t for t, h in HEADINGS.items() if line.startswith(h)]
            if found:
                task = found[0]
        if task is not None:
            out.setdefault(task, []).append(line)
    return {t: "\n".join(lines).strip() for t, lines in out.items()}


def _package_doc() -> str:
    from . import __doc__ as doc

    return doc or ""


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m saeembed.evaluate", description=_package_doc(),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, default=Path("eval/eval.duckdb"))
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of the shared datasets")
    ap.add_argument("--docs", type=int, default=1000, help="documents per labelled corpus")
    ap.add_argument("--sae", default="default")
    ap.add_argument("--doc-sae", default="doc", help="document-level SAE compared in retrieval and clustering, "
                    "its corpora encoded into STORE as NAME_doc ('' to skip)")
    ap.add_argument("--only", default=",".join(TASKS), help=f"comma list of {', '.join(TASKS)}")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--labels-before", type=Path, default=None,
                    help="a labels.parquet of the same SAE that the labels task compares with the shipped labels "
                         "(e.g. the c-TF-IDF labels first shipped: git show "
                         "0da85d1:saeembed/data/default_sae/labels.parquet > before.parquet)")
    ap.add_argument("--steering-halves", default="dev,held-out",
                    help="the steering task's halves to run: dev, held-out or both (comma list)")
    args = ap.parse_args(argv)
    if args.labels_before is not None and not args.labels_before.is_file():
        ap.error(f"--labels-before {args.labels_before}: no such file; pass a labels.parquet of the SAE")
    only = [t.strip() for t in args.only.split(",") if t.strip()]
    unknown = set(only) - set(TASKS)
    if unknown:
        ap.error(f"unknown task(s) {', '.join(sorted(unknown))}; choose from {', '.join(TASKS)}")
    args.store.parent.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    h = Harness(args.store, args.data, args.docs, args.sae)
    doc = Harness(args.store, args.data, args.docs, args.doc_sae, suffix="_doc", share=h) if args.doc_sae else None
    by_task: dict[str, str] = {}
    results: dict[str, Any] = {"docs": args.docs, "sae": args.sae, "doc_sae": args.doc_sae}
    old_md = args.out / "evaluation.md"
    earlier = previous_sections(old_md.read_text()) if old_md.exists() else {}
    old_json = args.out / "evaluation.json"
    earlier_results = json.loads(old_json.read_text()) if old_json.exists() else {}
    t_start = time.perf_counter()

    def write() -> str:
        """The report so far: tasks measured in this run, the others' sections and results carried over
        from the previous report (in task order), so a crash in a later task loses nothing measured."""
        carried = [t for t in TASKS if t not in by_task and t in earlier]
        report = "\n\n".join(by_task.get(t) or earlier[t] for t in TASKS if t in by_task or t in carried) + "\n"
        out = dict(results)
        out.update({t: earlier_results[t] for t in carried if t in earlier_results})
        if carried:
            out["carried_over"] = carried
        # encode times of corpora only the carried-over tasks read stay with their results
        out["encode_s"] = {**(earlier_results.get("encode_s", {}) if carried else {}), **h.encode_s}
        if doc is not None:
            out["doc_encode_s"] = {**(earlier_results.get("doc_encode_s", {}) if carried else {}), **doc.encode_s}
        out["wall_s"] = time.perf_counter() - t_start
        (args.out / "evaluation.md").write_text(report)
        (args.out / "evaluation.json").write_text(json.dumps(out, indent=2, default=str))
        return report

    if "retrieval" in only:
        df = eval_retrieval(h, RETRIEVAL_TASKS, doc)
        results["retrieval"] = df.to_dicts()
        by_task["retrieval"] = ("### Property retrieval: MAP (dev half, held-out half, all tasks)\n\n"
                                + markdown(retrieval_table(df, "map"))
                                + "\n\n### Property retrieval: precision@50\n\n" + markdown(retrieval_table(df, "p50")))
        write()
    if "style" in only:
        df = eval_retrieval(h, STYLE_TASKS, doc)
        results["style"] = df.to_dicts()
        by_task["style"] = ("### Style retrieval: MAP on corpora and properties no other task reads (dev half, "
                            "held-out half, all tasks)\n\n" + markdown(retrieval_table(df, "map"))
                            + "\n\n### Style retrieval: precision@50\n\n" + markdown(retrieval_table(df, "p50")))
        write()
    if "labels" in only:
        df = eval_label_quality(h, pl.read_parquet(args.labels_before) if args.labels_before else None)
        results["labels"] = df.to_dicts()
        by_task["labels"] = (f"### Label quality: the labels shown for the top {LABEL_TOP} diff latents (share whose "
                             "detection score is at or above the floor; the rest show their strongest context)\n\n"
                             + markdown(df))
        write()
    if "clustering" in only:
        df = eval_clustering(h, doc)
        results["clustering"] = df.to_dicts()
        by_task["clustering"] = "### Targeted clustering, Amazon reviews (domain × sentiment)\n\n" + markdown(df)
        write()
    if "steering" in only:
        halves = tuple(p.strip() for p in args.steering_halves.split(",") if p.strip())
        df = with_other_halves(eval_steering(h, halves=halves), earlier_results.get("steering", []), halves)
        results["steering"] = df.to_dicts()
        by_task["steering"] = steering_section(df)
        write()
    if "diffing" in only:
        summary, tops = eval_diffing(h)
        results["diffing"] = {"summary": summary.to_dicts(), "top": {k: v.to_dicts() for k, v in tops.items()}}
        text = "### Dataset diffing: replication of the top-50 differences across halves\n\n" + markdown(summary)
        for title, top in tops.items():
            text += (f"\n\n**{title}**: the ten largest frequency differences (target = the corpus where the "
                     "latent is more frequent)\n\n" + markdown(top.head(10)))
        by_task["diffing"] = text
        write()
    if "length" in only:
        tables = eval_length(h)
        results["length"] = {k: v.to_dicts() for k, v in tables.items()}
        by_task["length"] = (
            "### Length control: (1) null — latents significant (q < 0.05) for a corpus that differs only in "
            "length\n\n" + markdown(tables["null"])
            + "\n\n### Length control: (2) planted — a phrase in a quarter of the longer corpus, against the "
            "shorter one\n\n" + markdown(tables["planted"])
            + "\n\n### Length control: (3) AlpacaEval — top-15 rows whose difference keeps its sign and half "
            "its size on length-matched instruction pairs\n\n" + markdown(tables["alpaca"]))
        write()
    if "correlation" in only:
        df = eval_correlation(h)
        results["correlation"] = df.to_dicts()
        by_task["correlation"] = "### Correlations: rank of a planted pair\n\n" + markdown(df)
        write()
    if "speed" in only:
        df = eval_speed(h)
        results["speed"] = df.to_dicts()
        by_task["speed"] = "### Encode speed\n\n" + markdown(df, digits=2)
    print(write())

if __name__ == "__main__":
    main()
