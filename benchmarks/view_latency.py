"""How long users wait for answers: cold CLI commands, tables vs JSON, an HTML report, the encode bar.

    python benchmarks/view_latency.py --out DIR [--repeat 3] [--only encode,firstmove,views,oldstore,storage,agree]
                                      [--data DIR]

Builds (once, reused on later runs) ``DIR/views.duckdb`` with the shipped reader and SAE through the
CLI: two GoEmotions corpora of 150 comments (short documents) and two of 160 AlpacaEval answers
(long documents, ≈440 and ≈180 tokens), the latter read straight from the long-format file with
``--where "generator = '...'"``. Every timing is a fresh ``python -m saeembed`` process (cold start
included, as a user types it), best of ``--repeat``, with its CPU seconds and the 1-minute load
average next to it; on a shared machine compare ratios measured in the same run, not absolute
seconds (CPU seconds stand in for a quiet machine's wall time: the commands run on one core, apart
from the reader's forwards).

- ``encode``: the encode of each corpus; seconds from the process start and from the "encoding ..."
  line (models loaded, work starts) until the bar first moves, and the whole run. ``firstmove``: the
  same for the long answers, stopped once the bar has moved and the size estimate is out.
- ``views``: ``diff`` and ``search`` as a table vs ``--format json`` (the table marks example
  snippets from the stored token positions), after one untimed run that builds the per-corpus caches
  (search's descriptors, computed once per corpus); a 30-row HTML diff report of the long answers
  (``--top 30``; 3 example documents on each side of the first 10 rows of each target).
- ``oldstore``: the same table and HTML commands on a copy of the store with the positions removed,
  as an older saeembed wrote stores: their highlights re-run the reader, so the ratio of the two
  paths is measured in the same run.
- ``storage``: bytes per non-zero of the activations with and without ``peak_pos``, and of the
  documents' ``token_ends``, from DuckDB files holding only those rows (same order, after a
  checkpoint), for all four corpora and for the long answers alone.
- ``agree``: for the first 20 documents of each corpus, their 3 strongest and 3 weakest latents, the
  stored strongest token against the reader's recomputation (:func:`saeembed.highlight.token_activations`):
  the same token and the same characters, a tie of equal maxima, or a different token.

Results accumulate in ``DIR/view_latency.json`` (keyed by part) and are printed as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ALPACA = "alpacaeval_model_outputs/data.parquet"  # under --data
CORPORA = {  # name → (file, extra encode arguments)
    "ge_a": ("ge_a.parquet", []),
    "ge_b": ("ge_b.parquet", []),
    "alp_llama": (ALPACA, ["--where", "generator = 'llama-2-70b-chat-hf'", "--limit", "160"]),
    "alp_gpt": (ALPACA, ["--where", "generator = 'gpt-3.5-turbo-1106'", "--limit", "160"]),
}
VIEWS = [  # (label, arguments after the command name; the store is added)
    ("diff short", ["diff", "ge_a", "ge_b", "--fdr", "1", "--min-diff", "0.03"]),
    ("diff long", ["diff", "alp_llama", "alp_gpt", "--top", "15"]),
    ("search short", ["search", "ge_a", "gratitude, thanks"]),
    ("search long", ["search", "alp_llama", "apologising, refusing to answer"]),
]
HTML_REPORT = ["diff", "alp_llama", "alp_gpt", "--top", "30", "--format", "html"]  # 30 rows (the report says)
_BAR = re.compile(r"encoding:\s+\d+%\|[^|]*\|\s*([\d.]+)([kMG]?)/")


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def load() -> float:
    return os.getloadavg()[0]


def children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def saeembed(*args: str, stdout: int | None = subprocess.DEVNULL) -> tuple[float, float, subprocess.CompletedProcess]:
    """(wall seconds, CPU seconds of the process and its threads, the finished process)."""
    t0, c0 = time.perf_counter(), children_cpu()
    proc = subprocess.run([sys.executable, "-m", "saeembed", *args], env=env(), stdout=stdout,
                          stderr=subprocess.PIPE, text=True)
    took, cpu = time.perf_counter() - t0, children_cpu() - c0
    if proc.returncode != 0:
        raise SystemExit(f"saeembed {' '.join(args)} failed: {proc.stderr[-1500:]}")
    return took, cpu, proc


def best(args: list[str], repeat: int) -> dict:
    """Best wall time of ``repeat`` cold runs, with their CPU seconds (a quiet-machine proxy: on a
    loaded machine wall time is mostly waiting for a core) and the load average."""
    times, cpus, loads, note = [], [], [], ""
    for _ in range(repeat):
        loads.append(load())
        took, cpu, proc = saeembed(*args)
        times.append(took)
        cpus.append(cpu)
        note = next((ln for ln in proc.stderr.splitlines() if ln.startswith("wrote ")), note)
    out = {"s": round(min(times), 2), "cpu_s": round(min(cpus), 2), "all_s": [round(t, 2) for t in times],
           "load": round(sum(loads) / len(loads), 1)}
    return {**out, "note": note} if note else out


def prepare_inputs(out: Path, data: Path) -> None:
    import polars as pl

    src = data / "goemotions" / "data.parquet"
    src = src if src.exists() else REPO / "datasets" / "goemotions" / "sample.parquet"
    ge = pl.read_parquet(src).select("id", "text")
    ge.slice(0, 150).write_parquet(out / "ge_a.parquet")
    ge.slice(150, 150).write_parquet(out / "ge_b.parquet")


def encode(out: Path, data: Path, store: Path, name: str, stop_when_moved: bool = False) -> dict:
    """Encode one corpus through the CLI, timing when the bar first moves (read from stderr as it comes);
    ``stop_when_moved``: end the encode there (the ``firstmove`` measurement)."""
    file, extra = CORPORA[name]
    path = str(data / file) if "/" in file else str(out / file)
    cmd = [sys.executable, "-m", "saeembed", "encode", path, "--store", str(store), "--name", name, *extra]
    marks: dict[str, float] = {}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    buf = ""

    def read() -> None:
        nonlocal buf
        while chunk := proc.stderr.read1(4096).decode("utf-8", "replace"):  # type: ignore[union-attr]
            buf += chunk
            now = time.perf_counter() - t0
            if "work" not in marks and "encoding " in buf and "documents of" in buf:
                marks["work"] = now
            if "moved" not in marks and any(float(n) > 0 for n, _ in _BAR.findall(buf)):
                marks["moved"] = now
            if "estimate" not in marks and "estimated size on disk" in buf:
                marks["estimate"] = now
            if stop_when_moved and "moved" in marks and "estimate" in marks:
                proc.terminate()
                return

    reader = threading.Thread(target=read)
    reader.start()
    proc.wait()
    reader.join()
    total = time.perf_counter() - t0
    if proc.returncode != 0 and not stop_when_moved:
        raise SystemExit(f"encode {name} failed: {buf[-1500:]}")
    summary = [ln for ln in re.split(r"[\r\n]", buf) if ln.startswith("stored ")]
    nan = float("nan")
    return {"total_s": round(total, 1), "work_starts_s": round(marks.get("work", nan), 1),
            "bar_moves_s": round(marks.get("moved", nan), 1),
            "bar_moves_after_work_starts_s": round(marks.get("moved", nan) - marks.get("work", nan), 1),
            "estimate_s": round(marks.get("estimate", nan), 1), "summary": summary[-1] if summary else "",
            "load": round(load(), 1)}


def views(store: Path, out: Path, repeat: int) -> dict:
    res = {}
    for label, args in VIEWS:
        s = ["--store", str(store)]
        saeembed(*args, *s, "--format", "json")  # untimed: builds the per-corpus caches (descriptors) once
        table = best([*args, *s], repeat)
        js = best([*args, *s, "--format", "json"], repeat)
        res[label] = {"table": table, "json": js, "table_over_json": round(table["s"] / js["s"], 2),
                      "table_over_json_cpu": round(table["cpu_s"] / js["cpu_s"], 2)}
    res["html report (30 rows, long)"] = best([*HTML_REPORT, "--store", str(store), "--output",
                                               str(out / "report.html")], repeat)
    return res


def without_positions(store: Path, copy: Path) -> Path:
    """A copy of the store as one written before positions were kept (the columns gone, flag off)."""
    import duckdb

    for p in (copy, Path(f"{copy}.wal")):
        p.unlink(missing_ok=True)
    shutil.copy(store, copy)
    con = duckdb.connect(str(copy))
    for table, col in (("activations", "peak_pos"), ("documents", "token_ends")):
        con.execute(f"ALTER TABLE {table} DROP COLUMN {col}")
    con.execute("UPDATE corpora SET config = json_merge_patch(config, '{\"token_positions\": false}')")
    con.execute("CHECKPOINT")
    con.close()
    return copy


def old_store(store: Path, out: Path, repeat: int) -> dict:
    old = without_positions(store, out / "old.duckdb")
    res = {}
    for label, args in VIEWS[:2]:
        res[label] = {"table": best([*args, "--store", str(old)], repeat)}
    res["html report (30 rows, long)"] = best([*HTML_REPORT, "--store", str(old), "--output",
                                               str(out / "report_old.html")], repeat)
    return res


def storage(store: Path, out: Path) -> dict:
    """Bytes per non-zero: the activations alone, with and without the position column, and the token ends."""
    import duckdb

    out_rows = {}
    for part, corpora in (("all", None), ("long answers", ("alp_llama", "alp_gpt"))):
        src = duckdb.connect(str(store), read_only=True)
        ids = [r[0] for r in src.execute("SELECT corpus_id FROM corpora" + (
            " WHERE name IN (SELECT unnest(?::VARCHAR[]))" if corpora else ""), [list(corpora)] if corpora else
            []).fetchall()]
        src.close()
        where = f"doc_id >> 32 IN ({', '.join(map(str, ids))})"
        sizes, nnz = {}, 0
        for variant, cols, table in (
            ("without", "doc_id, feature_id, value, total, n_active", "activations"),
            ("with", "doc_id, feature_id, value, total, n_active, peak_pos", "activations"),
            ("token_ends", "doc_id, token_ends", "documents"),
        ):
            path = out / f"size_{variant}.duckdb"
            path.unlink(missing_ok=True)
            con = duckdb.connect(str(path))
            con.execute(f"ATTACH '{store}' AS src (READ_ONLY)")
            con.execute(f"CREATE TABLE t AS SELECT {cols} FROM src.{table} WHERE {where} ORDER BY doc_id >> 32"
                        + (", feature_id, doc_id" if table == "activations" else ", doc_id"))
            con.execute("DETACH src")
            con.execute("CHECKPOINT")
            used = con.execute("SELECT used_blocks * block_size FROM pragma_database_size()").fetchall()[0][0]
            if table == "activations":
                nnz = con.execute("SELECT count(*) FROM t").fetchall()[0][0]
            con.close()
            sizes[variant] = int(used)
            path.unlink(missing_ok=True)
        out_rows[part] = {"nonzeros": int(nnz),
                          "bytes_per_nonzero_without_positions": round(sizes["without"] / nnz, 2),
                          "bytes_per_nonzero_with_peak_pos": round(sizes["with"] / nnz, 2),
                          "token_ends_bytes_per_nonzero": round(sizes["token_ends"] / nnz, 2),
                          "bytes_per_nonzero_in_all": round((sizes["with"] + sizes["token_ends"]) / nnz, 2)}
    return out_rows


def agree(store: Path, docs: int = 20, per_doc: int = 3) -> dict:
    """Whether each sampled (document, latent)'s stored strongest token is the reader's."""
    import numpy as np

    sys.path.insert(0, str(REPO))
    import saeembed
    from saeembed.highlight.recompute import token_activations
    from saeembed.highlight.stored import read_peaks

    st = saeembed.open_store(store)
    res = {}
    for name in CORPORA:
        cid = st.corpus(name)["corpus_id"]
        acts = st.sql("""SELECT doc_id, feature_id FROM activations WHERE doc_id >> 32 = ? AND (doc_id & 4294967295)
                         IN (SELECT row_idx FROM documents WHERE corpus_id = ? ORDER BY row_idx LIMIT ?)
                         ORDER BY doc_id, value DESC, feature_id""", [cid, cid, docs])
        pairs = []
        for _, grp in acts.group_by("doc_id", maintain_order=True):
            rows = list(grp.iter_rows())
            pairs += rows[:per_doc] + rows[-per_doc:]
        peaks = read_peaks(st, pairs)
        t0 = time.perf_counter()
        toks = token_activations(st, sorted({d for d, _ in pairs}), sorted({f for _, f in pairs}))
        forward_s = time.perf_counter() - t0
        by = {k: g.sort("position") for k, g in toks.group_by("doc_id", "feature_id")}
        same = ties = differ = 0
        for (d, f), p in peaks.items():
            g = by[(d, f)]
            a, tokens = g["activation"].to_numpy(), g["token"].to_list()
            top = int(np.argmax(a))
            start = sum(len(t) for t in tokens[:top])
            if p.peak_pos == top and p.peak == (start, start + len(tokens[top])):
                same += 1
            elif p.peak_pos is not None and a[p.peak_pos] >= a[top] * (1 - 1e-4):
                ties += 1
            else:
                differ += 1
        res[name] = {"pairs": len(peaks), "same_token_and_characters": same, "tie_of_equal_maxima": ties,
                     "different": differ, "reader_recompute_s": round(forward_s, 1), "load": round(load(), 1)}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default="encode,views,oldstore,storage")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "datasets",
                    help="folder of the shared datasets (AlpacaEval, GoEmotions)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    store = args.out / "views.duckdb"
    results_file = args.out / "view_latency.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    only = set(args.only.split(","))
    if "encode" in only or not store.exists():
        prepare_inputs(args.out, args.data)
        for p in (store, Path(f"{store}.wal")):
            p.unlink(missing_ok=True)
        results["encode"] = {name: encode(args.out, args.data, store, name) for name in CORPORA}
    if "firstmove" in only:  # the long answers, stopped once the bar has moved: a short, repeatable check
        scratch = args.out / "firstmove.duckdb"
        runs = []
        for _ in range(args.repeat):
            shutil.rmtree(f"{scratch}.work", ignore_errors=True)
            runs.append(encode(args.out, args.data, scratch, "alp_llama", stop_when_moved=True))
        results["first_move"] = runs
        shutil.rmtree(f"{scratch}.work", ignore_errors=True)
    if "views" in only:
        results["views"] = views(store, args.out, args.repeat)
    if "oldstore" in only:
        results["old_store"] = old_store(store, args.out, args.repeat)
    if "storage" in only:
        results["storage"] = storage(store, args.out)
    if "agree" in only:
        results["agree"] = agree(store)
    results["cpus"] = os.cpu_count()
    results_file.write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
