"""Analysis latency: diff / correlate / search on synthetic sparse SAE embeddings in DuckDB.

    python benchmarks/analysis_latency.py --docs 10000,100000,1000000 --out /tmp/saeembed_bench

For every size N a store ``DIR/synthetic_N.duckdb`` is built once (and reused on later runs while
the generator's parameters are unchanged) with the schema that ``saeembed.store.connect`` creates:
two corpora, ``A`` (rows 0..N/2-1) and ``B`` (the rest), ≈100 non-zeros per document over
d_sae = 65,536 latents, Zipf-like latent popularity (p ∝ 1/(rank + 20), ranks shuffled over ids, so
a few latents fire in half the documents and most in a handful), lognormal values, a few planted
latents several times more frequent in A than in B, and one ``saes`` row with a label for every
latent (random words from a small vocabulary plus a few meaningful ones: "sarcasm", "dogs", ...).
Activations are written in the order ``ingest_corpus`` writes them (doc_id, feature_id), in bulk
from Arrow.

Timed, through the public API only (``saeembed.open_store`` + ``saeembed.analysis``), with DuckDB
``SET threads=2`` and ``torch.set_num_threads(2)`` to mirror the 2-core target:

- ``diff(store, ["A", "B"])`` (all N documents), with its default length control and with
  ``control="none"``, alternately, so the ratio of the two shares one load,
- ``correlate(store, "A")`` (N/2 documents),
- ``search(store, "A", "sarcasm")`` (sae mode, N/2 documents). Reported apart from the warm
  per-query latency: the MiniLM load, the first query of a process (it loads the embeddings of all
  65,536 labels from saeembed's disk cache, or with ``--cold-labels`` embeds them all first), and
  the query's own MiniLM embedding with 2 and 1 torch threads.

Each analysis runs ``--warmup`` times untimed, then ``--repeat`` times; the median wall time and the
median process CPU time (all threads) are reported, with the 1-minute load average: on a shared
machine wall time above CPU time is time spent waiting for a core. ``--profile`` adds, at the
largest size, a cProfile of each analysis, the wall time of every SQL statement it sends (for
``con.execute`` the execution only, not the fetch) and ``EXPLAIN ANALYZE`` of the main queries in
``queries/``. Results accumulate in ``DIR/analysis_latency.json`` keyed by size and variant.

Layouts (``--layout``, several comma-separated are measured in one run, so their ratios share the
machine's load): ``doc`` is the generated store, activations ordered (doc_id, feature_id);
``latent`` is what ``ingest_corpus`` writes today, derived from it: activations ordered (corpus,
feature_id, doc_id) in the DuckDB file, latent statistics computed as at ingest; ``parquet`` is a
corpus kept as Parquet (``encode --keep parquet``): each corpus' activations written by
``saeembed.store.parquet.keep_as_parquet`` (sorted Parquet files next to the store, registered, statistics
at registration), the DuckDB file holding only the registry, documents and labels.
``--torch-threads 1`` embeds the query on one thread.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import duckdb  # noqa: E402 - after the environment and sys.path set-up above

from saeembed import store as store_mod  # noqa: E402

D_SAE = 65_536
TARGET_NNZ = 100
ZIPF_OFFSET = 20
ZIPF_EXPONENT = 1.0
N_PLANTED = 20
N_GROUPS, GROUP_SIZE, P_GROUP, P_MEMBER = 40, 3, 0.03, 0.8  # co-occurring latents, for correlate
PLANTED_P_A, PLANTED_P_B = 0.15, 0.03
CHUNK_DOCS = 50_000
SAE_ID = "synthetic@bench"
GEN_VERSION = 2  # bump when the generator changes, so cached stores are rebuilt
QUERY = "sarcasm"
OTHER_QUERIES = ["dogs", "legal language", "questions about cooking"]

VOCAB = ["apple", "river", "code", "table", "music", "window", "history", "market", "engine", "garden", "number",
         "protein", "letter", "ocean", "travel", "doctor", "season", "memory", "signal", "metal", "school",
         "winter", "mountain", "poem", "kitchen", "bridge", "science", "camera", "paper", "fire", "money",
         "weather", "language", "city", "road", "village", "island", "storm", "planet", "paint", "tennis",
         "coffee", "engine", "pattern", "circuit", "battery", "contract", "insurance", "hospital", "medicine",
         "symptom", "climate", "energy", "fabric", "cotton", "leather", "wheel", "rocket", "galaxy", "molecule",
         "vector", "matrix", "theorem", "proof", "series", "function", "database", "server", "network", "packet",
         "kernel", "thread", "memory", "dialogue", "speech", "opinion", "review", "rating", "price", "discount",
         "delivery", "package", "shipping", "refund", "battery", "charger", "screen", "keyboard", "mouse",
         "printer", "cable", "router", "phone", "tablet", "laptop", "camera", "lens", "family", "parent", "child",
         "friend", "teacher", "student", "manager", "worker", "artist", "author", "reader", "writer", "morning",
         "evening", "night", "summer", "autumn", "spring", "holiday", "birthday", "wedding", "funeral", "party",
         "dinner", "breakfast", "lunch", "recipe", "flavour", "spice", "sugar", "butter", "bread", "cheese",
         "fruit", "vegetable", "meat", "fish", "football", "soccer", "baseball", "hockey", "golf", "swimming",
         "running", "cycling", "boxing", "chess", "puzzle", "game", "novel", "chapter", "sentence", "paragraph",
         "quote", "title", "heading", "list", "bullet", "table", "figure", "caption", "number", "date", "time",
         "place", "name", "address", "email", "website", "link", "button", "menu", "error", "warning", "notice"]
MEANINGFUL = {
    "sarcasm": ["sarcasm", "sarcastic remarks", "irony and sarcasm", "mocking, sarcastic tone",
                "sarcastic praise", "dry humor and irony"],
    "dogs": ["dogs", "dog breeds", "puppies and dog training", "barking dogs"],
    "legal": ["legal language", "contract clauses"],
    "cooking": ["cooking instructions", "questions about recipes"],
}


# --------------------------------------------------------------------------------------------
# synthetic store
# --------------------------------------------------------------------------------------------

def _popularity(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-draw latent probabilities (indexed by feature id), their CDF over a shuffled order and
    the number of draws per document that gives ``TARGET_NNZ`` distinct latents on average."""
    rank_p = 1.0 / (np.arange(D_SAE) + ZIPF_OFFSET) ** ZIPF_EXPONENT
    rank_p /= rank_p.sum()
    perm = rng.permutation(D_SAE).astype(np.int32)  # perm[rank] = feature id
    m = TARGET_NNZ
    while (1 - (1 - rank_p) ** m).sum() < TARGET_NNZ:
        m += 1
    return perm, np.cumsum(rank_p), m


def _labels(rng: np.random.Generator, perm: np.ndarray, planted: np.ndarray
            ) -> tuple[pl.DataFrame, dict[str, list[int]]]:
    """One label per latent: 2–3 random vocabulary words, except a few meaningful ones."""
    n_words = rng.integers(2, 4, D_SAE)
    words = np.array(VOCAB, dtype=object)[rng.integers(0, len(VOCAB), (D_SAE, 3))]
    labels = [" ".join(words[i, :n_words[i]]) for i in range(D_SAE)]
    meaning: dict[str, list[int]] = {}
    # meaningful latents sit at mid popularity (ranks 200..5000: 0.3–5 % of documents)
    mid = perm[rng.choice(np.arange(200, 5000), sum(map(len, MEANINGFUL.values())), replace=False)]
    i = 0
    for key, labs in MEANINGFUL.items():
        meaning[key] = []
        for j, lab in enumerate(labs):
            # the planted (A-enriched) latents that carry a label get the "legal" ones
            f = int(planted[j]) if key == "legal" else int(mid[i])
            labels[f] = lab
            meaning[key].append(f)
            i += 1
    df = pl.DataFrame({"feature_id": np.arange(D_SAE, dtype=np.int32), "label": labels,
                       "label_source": ["synthetic"] * D_SAE})
    return df, meaning


def _activation_chunk(rng: np.random.Generator, corpus_id: int, row0: int, n: int, perm: np.ndarray,
                      cdf: np.ndarray, draws: int, planted: np.ndarray, p_planted: float,
                      groups: np.ndarray, scale: np.ndarray) -> tuple[pl.DataFrame, np.ndarray]:
    """Activations of rows row0..row0+n-1 of one corpus, sorted by (doc_id, feature_id)."""
    per_doc = np.maximum(1, np.rint(draws * rng.lognormal(-0.045, 0.3, n))).astype(np.int64)
    doc = np.repeat(np.arange(n, dtype=np.int64), per_doc)
    feat = perm[np.minimum(np.searchsorted(cdf, rng.random(len(doc))), D_SAE - 1)].astype(np.int64)
    pd_, pf = np.nonzero(rng.random((n, len(planted))) < p_planted)
    gd, gi = np.nonzero(rng.random((n, len(groups))) < P_GROUP)  # an active group fires most members
    gd, gm = np.repeat(gd, GROUP_SIZE), groups[gi].ravel()
    keep = rng.random(len(gm)) < P_MEMBER
    key = np.unique(np.concatenate([doc * D_SAE + feat, pd_.astype(np.int64) * D_SAE + planted[pf],
                                    gd[keep].astype(np.int64) * D_SAE + gm[keep]]))
    row, f = key // D_SAE, (key % D_SAE).astype(np.int32)
    value = (scale[f] * rng.lognormal(0.0, 0.6, len(key))).astype(np.float32)
    n_active = rng.geometric(0.35, len(key)).astype(np.int32)
    total = (value * (1 + (n_active - 1) * rng.uniform(0.2, 1.0, len(key)))).astype(np.float32)
    frame = pl.DataFrame({"doc_id": (np.int64(corpus_id) << 32) | (row + row0), "feature_id": f,
                          "value": value, "total": total, "n_active": n_active})
    return frame, np.bincount(row, minlength=n)


def _documents(rng: np.random.Generator, corpus_id: int, n: int, nnz: np.ndarray) -> pl.DataFrame:
    words = np.array(VOCAB)[rng.integers(0, len(VOCAB), (n, 12))]
    text = pl.DataFrame({f"w{i}": words[:, i] for i in range(12)}).select(
        pl.concat_str(pl.all(), separator=" ").alias("text"))["text"]
    row = np.arange(n, dtype=np.int64)
    return pl.DataFrame({
        "doc_id": (np.int64(corpus_id) << 32) | row,
        "corpus_id": np.full(n, corpus_id, np.int32),
        "row_idx": row,
        "text": text,
        "n_tokens": np.maximum(nnz, np.rint(rng.lognormal(5.3, 0.5, n))).astype(np.int32),
        "meta": pl.Series([None] * n, dtype=pl.String),
    })


def build_store(path: Path, n_docs: int, seed: int, memory_limit: str) -> dict:
    """Write a synthetic store to ``path`` (via a temporary file, so a killed build is never reused)."""
    rng = np.random.default_rng(seed)
    perm, cdf, draws = _popularity(rng)
    planted = perm[rng.choice(np.arange(300, 3000), N_PLANTED, replace=False)].astype(np.int64)
    scale = rng.lognormal(0.5, 0.5, D_SAE).astype(np.float32)
    groups = perm[rng.choice(np.arange(5000, 30000), N_GROUPS * GROUP_SIZE, replace=False)].astype(np.int64)
    groups = groups.reshape(N_GROUPS, GROUP_SIZE)
    labels, meaning = _labels(rng, perm, planted)
    tmp = path.with_suffix(".building")
    for p in (tmp, Path(str(tmp) + ".wal")):
        p.unlink(missing_ok=True)
    t0 = time.perf_counter()
    con = store_mod.connect(tmp)  # the package's own schema
    con.execute("SET threads=2")
    con.execute(f"SET memory_limit='{memory_limit}'")
    con.execute("SET preserve_insertion_order=true")
    store_mod.register_sae(con, SAE_ID, {"d_in": 576, "d_sae": D_SAE, "activation": "topk", "k": TARGET_NNZ,
                                         "reader": "synthetic", "layer": 0, "hook_name": None, "path": None},
                           labels)
    sizes = {"A": n_docs // 2 + n_docs % 2, "B": n_docs // 2}
    nnz_total = 0
    for cid, (name, n) in enumerate(sizes.items(), start=1):
        p_planted = PLANTED_P_A if name == "A" else PLANTED_P_B
        nnz = np.zeros(n, np.int64)
        for row0 in range(0, n, CHUNK_DOCS):
            m = min(CHUNK_DOCS, n - row0)
            frame, counts = _activation_chunk(rng, cid, row0, m, perm, cdf, draws, planted, p_planted,
                                                   groups, scale)
            nnz[row0:row0 + m] = counts
            con.register("_acts", frame.to_arrow())
            con.execute("INSERT INTO activations BY NAME SELECT * FROM _acts")
            con.unregister("_acts")
            nnz_total += frame.height
        docs = _documents(rng, cid, n, nnz)
        con.execute(
            "INSERT INTO corpora (corpus_id, name, source, n_docs, reader, layer, sae, pooling, n_tokens, config) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [cid, name, f"synthetic:{n_docs}:{seed}", n, "synthetic", 0, SAE_ID, "max",
             int(docs["n_tokens"].sum()), json.dumps({"synthetic": True})])
        con.register("_docs", docs.to_arrow())
        con.execute("INSERT INTO documents BY NAME SELECT * FROM _docs")
        con.unregister("_docs")
    con.execute("CHECKPOINT")
    con.close()
    elapsed = time.perf_counter() - t0
    tmp.replace(path)
    meta = {"gen_version": GEN_VERSION, "n_docs": n_docs, "seed": seed, "n_activations": int(nnz_total),
            "nnz_per_doc": nnz_total / n_docs, "build_s": elapsed, "bytes": path.stat().st_size,
            "planted": [int(x) for x in planted], "meaningful": meaning, "groups": groups.tolist(),
            "draws_per_doc": draws}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    return meta


def derive_latent_major(src: Path, path: Path, src_meta: dict, memory_limit: str) -> dict:
    """The same store with activations ordered (corpus, feature_id, doc_id) instead of (doc_id, feature_id).

    A proposal under test, not what ``ingest_corpus`` writes today: each latent's rows become contiguous
    inside its corpus, so zone maps on feature_id prune row groups for the analyses that select latents
    (search, top documents), while the corpus' doc_id range stays contiguous for the BETWEEN filters.
    """
    tmp = path.with_suffix(".building")
    for p in (tmp, Path(str(tmp) + ".wal")):
        p.unlink(missing_ok=True)
    t0 = time.perf_counter()
    con = store_mod.connect(tmp)
    con.execute("SET threads=2")
    con.execute(f"SET memory_limit='{memory_limit}'")
    con.execute(f"ATTACH '{src}' AS src (READ_ONLY)")
    for table in ("saes", "features", "corpora", "documents"):
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM src.{table}")
    con.execute("INSERT INTO activations BY NAME SELECT * FROM src.activations "
                "ORDER BY doc_id >> 32, feature_id, doc_id")
    con.execute("DETACH src")
    _kept_stats(con)
    con.execute("CHECKPOINT")
    con.close()
    elapsed = time.perf_counter() - t0
    tmp.replace(path)
    meta = {**src_meta, "layout": "latent", "build_s": elapsed, "derived_from": str(src), "bytes": path.stat().st_size}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    return meta


def _kept_stats(con) -> None:
    """Latent statistics and length strata of every corpus, as ``ingest_corpus`` keeps them (the analyses
    read them)."""
    from saeembed.ids import corpus_range
    from saeembed.store.stats import compute, write
    from saeembed.store.strata import keep_strata

    for (cid,) in con.execute("SELECT corpus_id FROM corpora ORDER BY 1").fetchall():
        write(con, cid, compute(con, *corpus_range(cid)))
        keep_strata(con, cid)


def derive_parquet(src: Path, path: Path, src_meta: dict, memory_limit: str) -> dict:
    """The same corpora kept as Parquet (``--keep parquet``): registry, documents and labels in the DuckDB
    file; each corpus' activations exported as shard-like rows (row_idx, ...) and handed to
    ``saeembed.store.parquet.keep_as_parquet``, which writes the sorted files, registers them and computes the
    corpus' statistics, exactly as an encode with ``--keep parquet`` ends."""
    import pyarrow.dataset as pads

    from saeembed.ids import corpus_range
    from saeembed.store.parquet import keep_as_parquet

    tmp = path.with_suffix(".building")
    for p in (tmp, Path(str(tmp) + ".wal")):
        p.unlink(missing_ok=True)
    pq_root = Path(f"{path}.parquet")
    shutil.rmtree(pq_root, ignore_errors=True)
    shutil.rmtree(Path(f"{tmp}.parquet"), ignore_errors=True)
    t0 = time.perf_counter()
    con = store_mod.connect(tmp)
    con.execute("SET threads=2")
    con.execute(f"SET memory_limit='{memory_limit}'")
    con.execute(f"ATTACH '{src}' AS src (READ_ONLY)")
    for table in ("saes", "features", "corpora", "documents"):
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM src.{table}")
    shard_dir = path.parent / f"{path.name}.shards"
    shard_dir.mkdir(exist_ok=True)
    export_s = 0.0
    for cid, name in con.execute("SELECT corpus_id, name FROM corpora ORDER BY 1").fetchall():
        lo, hi = corpus_range(cid)
        shard = shard_dir / f"{cid}.parquet"
        e0 = time.perf_counter()
        con.execute(f"""COPY (SELECT doc_id - {lo}::BIGINT AS row_idx, feature_id, value, total, n_active
                              FROM src.activations WHERE doc_id BETWEEN {lo} AND {hi})
                        TO '{shard}' (FORMAT parquet)""")
        export_s += time.perf_counter() - e0
        keep_as_parquet(con, corpus_id=cid, name=name, lo=lo, hi=hi, shards=pads.dataset([str(shard)]),
                        store_path=tmp, parquet_dir=str(pq_root))
    con.execute("DETACH src")
    # the registered paths name the final folder; the store file is renamed below
    con.execute("CHECKPOINT")
    con.close()
    shutil.rmtree(shard_dir, ignore_errors=True)
    elapsed = time.perf_counter() - t0 - export_s
    tmp.replace(path)
    pq_bytes = sum(f.stat().st_size for f in pq_root.rglob("*.parquet"))
    meta = {**src_meta, "layout": "parquet", "build_s": elapsed, "derived_from": str(src),
            "bytes": path.stat().st_size + pq_bytes, "parquet_bytes": pq_bytes}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    return meta


def get_store(out: Path, n_docs: int, seed: int, memory_limit: str, rebuild: bool,
              layout: str = "doc") -> tuple[Path, dict, bool]:
    suffix = {"doc": "", "latent": "_bylatent", "parquet": "_parquet"}[layout]
    path = out / f"synthetic_{n_docs}{suffix}.duckdb"
    meta_path = path.with_suffix(".json")
    if not rebuild and path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("gen_version") == GEN_VERSION and meta.get("seed") == seed:
            return path, meta, True
    if layout == "doc":
        return path, build_store(path, n_docs, seed, memory_limit), False
    src, src_meta, _ = get_store(out, n_docs, seed, memory_limit, rebuild, "doc")
    derive = derive_latent_major if layout == "latent" else derive_parquet
    return path, derive(src, path, src_meta, memory_limit), False


# --------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------

def _time(fn, warmup: int, repeat: int) -> tuple[float, list[float], object, float]:
    """Median wall seconds, all runs, the last result, and the median process CPU seconds (all threads)."""
    out = None
    for _ in range(warmup):
        out = fn()
    times, cpu = [], []
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(times), times, out, statistics.median(cpu)


def open_bench_store(path: Path, threads: int, memory_limit: str):
    import saeembed

    st = saeembed.open_store(path)
    st.con.execute(f"SET threads={threads}")
    st.con.execute(f"SET memory_limit='{memory_limit}'")
    return st


def label_cache_files() -> set[str]:
    """Files in saeembed's on-disk label-embedding cache (``$SAEEMBED_CACHE/label_embeddings``)."""
    d = Path(os.environ.get("SAEEMBED_CACHE", Path.home() / ".cache" / "saeembed")) / "label_embeddings"
    return {p.name for p in d.glob("*.npy")} if d.exists() else set()


def bench_size(path: Path, meta: dict, args: argparse.Namespace, report: dict) -> dict:
    import torch

    from saeembed.embed import get_embedder

    st = open_bench_store(path, args.threads, args.memory_limit)
    res: dict = {"n_docs": meta["n_docs"], "n_activations": meta["n_activations"]}
    res["loadavg_1m_before"] = os.getloadavg()[0]

    todo = set(args.analyses.split(","))
    if "diff" in todo:
        _bench_diff(st, meta, args, res)
    if "embeddings" in todo:  # a full read of corpus A's activations (what correlate/cluster scan)
        med, times, out, cpu = _time(lambda: st.embeddings("A"), args.warmup, args.repeat)
        res["embeddings"] = {"median_s": med, "cpu_s": cpu, "runs_s": times, "nnz": int(out[0].nnz)}
        print(f"  embeddings {med:8.3f} s  cpu {cpu:7.3f} s  ({out[0].nnz:,} non-zeros of corpus A)", flush=True)
    if "latents" in todo:  # the rows of 20 latents in corpus A (what search and example lookups read)
        from saeembed.ids import corpus_range

        lo, hi = corpus_range(1)
        feats = ", ".join(str(f) for f in meta["planted"])
        q = (f"SELECT doc_id, feature_id, value FROM activations WHERE doc_id BETWEEN {lo} AND {hi} "
             f"AND feature_id IN ({feats})")
        med, times, out, cpu = _time(lambda: st.con.execute(q).fetchnumpy(), args.warmup, args.repeat)
        res["latents"] = {"median_s": med, "cpu_s": cpu, "runs_s": times, "rows": int(len(out["doc_id"]))}
        print(f"  latents    {med:8.3f} s  cpu {cpu:7.3f} s  ({len(out['doc_id']):,} rows of 20 latents)", flush=True)
    # MiniLM is loaded by correlate's label-similarity step too: load it first, timed on its own
    if todo & {"correlate", "search"}:
        t0 = time.perf_counter()
        get_embedder()
        load_s = time.perf_counter() - t0
        if load_s > 0.05:  # cached per process after the first size
            report["minilm_load_s"] = load_s
    if "correlate" in todo:
        _bench_correlate(st, meta, args, res)
    if "search" in todo:
        _bench_search(st, meta, args, res, report)
    res["loadavg_1m_after"] = os.getloadavg()[0]
    res["torch_threads"] = torch.get_num_threads()
    st.close()
    return res


def _bench_diff(st, meta: dict, args: argparse.Namespace, res: dict) -> None:
    """diff with its default length control and with ``control="none"`` (the plain frequencies), timed
    alternately in one run so their ratio shares the machine's load."""
    from saeembed.analysis.diff import diff

    runs: dict[str, list[float]] = {"length": [], "none": []}
    cpus: dict[str, list[float]] = {"length": [], "none": []}
    out = {}
    for _ in range(args.warmup):
        for control in runs:
            out[control] = diff(st, ["A", "B"], control=control)
    for _ in range(args.repeat):
        for control in runs:
            _, times, out[control], cpu = _time(lambda c=control: diff(st, ["A", "B"], control=c), 0, 1)
            runs[control] += times
            cpus[control].append(cpu)
    planted = set(meta["planted"])
    for control, times in runs.items():
        top_a = out[control].filter(pl.col("target") == "A")["feature_id"].head(N_PLANTED).to_list()
        res["diff" if control == "length" else "diff_control_none"] = {
            "median_s": statistics.median(times), "cpu_s": statistics.median(cpus[control]), "runs_s": times,
            "rows": out[control].height, "planted_in_top20_A": len(planted & set(top_a))}
    d, n = res["diff"], res["diff_control_none"]
    d["ratio_to_control_none"] = d["median_s"] / n["median_s"]
    print(f"  diff       {d['median_s']:8.3f} s  cpu {d['cpu_s']:7.3f} s  (length control; runs "
          f"{', '.join(f'{t:.3f}' for t in d['runs_s'])}; {d['planted_in_top20_A']}/{N_PLANTED} planted latents in "
          f"A's top 20)", flush=True)
    print(f"  diff none  {n['median_s']:8.3f} s  cpu {n['cpu_s']:7.3f} s  (--control none; runs "
          f"{', '.join(f'{t:.3f}' for t in n['runs_s'])}; {n['planted_in_top20_A']}/{N_PLANTED} planted); "
          f"length / none = {d['ratio_to_control_none']:.2f}", flush=True)


def _bench_correlate(st, meta: dict, args: argparse.Namespace, res: dict) -> None:
    from saeembed.analysis.correlate import correlate

    reps = args.repeat if meta["n_docs"] < 1_000_000 else max(1, min(args.repeat, args.repeat_corr_1m))
    med, times, out, cpu = _time(lambda: correlate(st, "A"), min(args.warmup, 1), reps)
    groups = {frozenset(p) for g in meta["groups"] for p in ((g[0], g[1]), (g[0], g[2]), (g[1], g[2]))}
    found = sum(frozenset((a, b)) in groups for a, b in out.select("feature_a", "feature_b").iter_rows())
    res["correlate"] = {"median_s": med, "cpu_s": cpu, "runs_s": times, "rows": out.height,
                        "planted_pairs_found": found, "planted_pairs": len(groups)}
    print(f"  correlate  {med:8.3f} s  cpu {cpu:7.3f} s  (runs {', '.join(f'{t:.3f}' for t in times)}; "
          f"{out.height} pairs, {found}/{len(groups)} planted pairs)", flush=True)


def _bench_search(st, meta: dict, args: argparse.Namespace, res: dict, report: dict) -> None:
    from saeembed.analysis.retrieve import search

    # search: the first query of a process loads the label embeddings of all d_sae latents (saeembed
    # caches them on disk; on a cold cache it embeds every label with MiniLM first); then warm queries
    before = label_cache_files()
    t0 = time.perf_counter()
    search(st, "A", QUERY, k=10)
    first = time.perf_counter() - t0
    cold = bool(label_cache_files() - before)
    if cold:
        report["search_first_query_cold_s"] = first
    res["search_first_query_s"] = first
    res["label_embeddings"] = ("cold: embedded all labels, wrote saeembed's disk cache" if cold
                               else "loaded from saeembed's disk cache")
    med, times, out, cpu = _time(lambda: search(st, "A", QUERY, k=10), args.warmup, args.repeat)
    hits = set(meta["meaningful"]["sarcasm"])
    top_ok = sum(int(f) in hits for f in out["top_feature"].to_list())
    others = {}
    for q in OTHER_QUERIES:
        m, _, _, _ = _time(lambda q=q: search(st, "A", q, k=10), 0, max(1, args.repeat // 2))
        others[q] = m
    # the MiniLM embedding of the query alone: tiny, but with 2 torch threads on a busy machine OpenMP
    # spin-waits can make it ~0.5 s; shown apart (and with 1 thread) so it can be told from the rest
    import torch

    from saeembed.embed import get_embedder

    emb = {}
    for th in sorted({args.torch_threads, 2, 1}, reverse=True):
        torch.set_num_threads(th)
        emb[f"threads_{th}"], _, _, _ = _time(lambda: get_embedder().embed([QUERY]), 2, 21)
    torch.set_num_threads(args.torch_threads)
    res["search"] = {"median_s": med, "cpu_s": cpu, "runs_s": times, "top10_with_sarcasm_latent": top_ok,
                     "other_queries_median_s": others, "query_embedding_median_s": emb}
    print(f"  search     {med:8.3f} s  cpu {cpu:7.3f} s  (runs {', '.join(f'{t:.3f}' for t in times)}; "
          f"first query {first:.2f} s [{res['label_embeddings']}]; {top_ok}/10 hits led by a 'sarcasm' latent; "
          "other queries " + ", ".join(f"{q!r} {t:.3f}" for q, t in others.items()) + ")", flush=True)
    print("             of which the query's MiniLM embedding alone: " + ", ".join(
        f"{t:.3f} s ({k.replace('_', ' ')})" for k, t in emb.items()), flush=True)


# --------------------------------------------------------------------------------------------
# profile
# --------------------------------------------------------------------------------------------

def _cprofile(fn, top: int = 30) -> tuple[float, str]:
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    fn()
    prof.disable()
    elapsed = time.perf_counter() - t0
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(top)
    text = buf.getvalue()
    text = text[text.find("ncalls"):] if "ncalls" in text else text
    return elapsed, re.sub(r"/\S*/(saeembed|site-packages)/", r"\1/", text)


class _QueryLog:
    """Wraps the store's read-only connection to record every SQL statement and its wall time."""

    def __init__(self, con):
        self.con, self.log = con, []

    def _wrap(self, kind):
        real = getattr(self.con, kind)

        def run(query, *a, **kw):
            t0 = time.perf_counter()
            rel = real(query, *a, **kw)
            # con.sql is lazy: materialise like the caller will (.pl()/.fetchnumpy) to time the work
            if kind == "sql" and rel is not None:
                df = rel.pl()
                self.log.append((time.perf_counter() - t0, " ".join(str(query).split())[:160], df.height))
                return _Done(df)
            self.log.append((time.perf_counter() - t0, " ".join(str(query).split())[:160], None))
            return rel
        return run

    def __getattr__(self, name):
        if name in ("sql", "execute"):
            return self._wrap(name)
        return getattr(self.con, name)


class _Done:
    def __init__(self, df):
        self.df = df

    def pl(self):
        return self.df


def sql_log(st, fn) -> list[tuple[float, str, int | None]]:
    """Per-statement wall times of one analysis call (execute-time only for ``execute``)."""
    real = st._con
    logger = _QueryLog(real)
    st._con = logger
    try:
        fn()
    finally:
        st._con = real
    return logger.log


def explain(st, query_name: str, params: dict) -> str:
    sql_path = REPO / "queries" / f"{query_name}.sql"
    if not sql_path.exists():
        return f"(queries/{query_name}.sql not found)"
    sql = sql_path.read_text()
    rows = st.con.execute("EXPLAIN ANALYZE " + sql, params).fetchall()
    return "\n".join(r[1] for r in rows)


def profile(path: Path, meta: dict, args: argparse.Namespace) -> dict:
    from saeembed.analysis.correlate import correlate
    from saeembed.analysis.diff import diff
    from saeembed.analysis.retrieve import search

    st = open_bench_store(path, args.threads, args.memory_limit)
    search(st, "A", QUERY)  # label embeddings cached, MiniLM loaded
    out: dict = {}
    todo = args.analyses.split(",")
    for name, fn in (("diff", lambda: diff(st, ["A", "B"])), ("correlate", lambda: correlate(st, "A")),
                     ("search", lambda: search(st, "A", QUERY))):
        if name not in todo:
            continue
        fn()  # warm-up
        elapsed, text = _cprofile(fn)
        log = sql_log(st, fn)
        out[name] = {"elapsed_s": elapsed, "cprofile": text,
                     "sql": [{"s": s, "query": q, "rows": r} for s, q, r in log]}
        print(f"\n=== profile: {name} ({elapsed:.3f} s under cProfile) ===")
        print(text)
        print("  SQL statements (wall s, rows):")
        for s, q, r in sorted(log, key=lambda x: -x[0])[:10]:
            print(f"   {s:7.3f}  {r if r is not None else '-':>8}  {q}")
    lo_a, hi_a = 1 << 32, (1 << 32) | 0xFFFFFFFF
    plans = {"feature_doc_counts": {"lo": lo_a, "hi": hi_a, "threshold": 0.0}}
    sel = set(meta["meaningful"]["sarcasm"])
    feats = sorted(sel) + [int(f) for f in meta["planted"]][:10]
    plans["search_sae"] = {"lo": lo_a, "hi": hi_a, "features": feats, "weights": [1.0] * len(feats), "k": 10}
    plans["top_documents"] = {"lo": lo_a, "hi": hi_a, "features": feats, "n": 3}
    out["explain"] = {}
    for q, params in plans.items():
        try:
            text = explain(st, q, params)
        except duckdb.Error as exc:
            text = f"(EXPLAIN ANALYZE failed: {exc})"
        out["explain"][q] = text
        print(f"\n=== EXPLAIN ANALYZE queries/{q}.sql ===\n{text}")
    st.close()
    return out


# --------------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", default="10000,100000,1000000", help="comma-separated store sizes (documents)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/saeembed_bench"), help="stores + results folder")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per analysis (median reported)")
    ap.add_argument("--repeat-corr-1m", type=int, default=3, help="timed correlate runs at >= 10^6 documents")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2, help="DuckDB and torch threads (2 = the target machine)")
    ap.add_argument("--torch-threads", type=int, default=None,
                    help="torch threads if not --threads (1 avoids OpenMP spin-waits on a busy machine)")
    ap.add_argument("--memory-limit", default="6GB", help="DuckDB memory_limit for build and analyses")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rebuild", action="store_true", help="rebuild the stores even if cached")
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("--profile", action="store_true", help="cProfile + EXPLAIN ANALYZE at the largest size")
    ap.add_argument("--cold-labels", action="store_true",
                    help="point SAEEMBED_CACHE at an empty folder so the first search embeds every label (cold)")
    ap.add_argument("--tag", default="", help="label added to this invocation's variant in the results")
    ap.add_argument("--analyses", default="diff,correlate,search",
                    help="subset of diff,correlate,search,embeddings (full read of corpus A),latents (20 latents)")
    ap.add_argument("--layout", default="doc",
                    help="comma-separated, measured in one run: doc (generated, ordered doc_id, feature_id), latent "
                         "(DuckDB as ingest_corpus writes it: corpus, feature_id, doc_id; statistics kept), parquet "
                         "(the corpora kept as registered Parquet files, --keep parquet)")
    args = ap.parse_args()
    layouts = [x.strip() for x in args.layout.split(",") if x.strip()]
    if not layouts or any(x not in ("doc", "latent", "parquet") for x in layouts):
        ap.error("--layout takes doc, latent and/or parquet, comma-separated")

    import torch

    args.torch_threads = args.torch_threads or args.threads
    cold_cache = None
    if args.cold_labels:
        cold_cache = args.out / f"cold_cache_{os.getpid()}"
        os.environ["SAEEMBED_CACHE"] = str(cold_cache)
    torch.set_num_threads(args.torch_threads)
    args.out.mkdir(parents=True, exist_ok=True)
    sizes = [int(float(x)) for x in args.docs.split(",") if x.strip()]
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "duckdb": duckdb.__version__,
               "polars": pl.__version__, "threads": args.threads, "torch_threads": args.torch_threads,
               "memory_limit": args.memory_limit}
    params = {"d_sae": D_SAE, "target_nnz": TARGET_NNZ, "zipf_offset": ZIPF_OFFSET, "planted": N_PLANTED,
              "p_planted": [PLANTED_P_A, PLANTED_P_B], "groups": [N_GROUPS, GROUP_SIZE, P_GROUP, P_MEMBER],
              "seed": args.seed, "warmup": args.warmup, "repeat": args.repeat, "query": QUERY}
    report: dict = {"sizes": {}, "profile": {}}
    res_path = args.out / "analysis_latency.json"
    if res_path.exists():  # keep what earlier invocations measured (other sizes/variants, cold costs, profiles)
        try:
            report.update(json.loads(res_path.read_text()))
        except json.JSONDecodeError:
            pass
    report["machine"], report["params"] = machine, params
    def variant_of(layout: str) -> str:
        v = "+".join(v for v, on in (("latent-major", layout == "latent"), ("parquet", layout == "parquet"),
                                     (f"torch{args.torch_threads}", args.torch_threads != args.threads)) if on)
        return (v or "as-is") + (f"@{args.tag}" if args.tag else "")

    for n, layout in [(n, x) for n in sizes for x in layouts]:
        variant = variant_of(layout)
        free = shutil.disk_usage(args.out).free
        if free < n * 120:  # ≈ 25 B/non-zero while building, plus headroom
            sys.exit(f"not enough disk in {args.out} for {n} documents ({free / 2**30:.1f} GiB free)")
        path, meta, cached = get_store(args.out, n, args.seed, args.memory_limit, args.rebuild, layout)
        size = meta["bytes"] if meta.get("layout") == "parquet" else path.stat().st_size
        print(f"N={n:,}: store {path} {size / 2**20:,.0f} MiB, {meta['n_activations']:,} activations "
              f"({meta['nnz_per_doc']:.1f}/doc); build {meta['build_s']:.1f} s" + (" (cached)" if cached else ""),
              flush=True)
        key = f"{n}{'/' + variant if variant != 'as-is' else ''}"
        entry = {"n_docs": n, "variant": variant, "build_s": meta["build_s"], "store_bytes": size,
                 "n_activations": meta["n_activations"], "nnz_per_doc": meta["nnz_per_doc"],
                 "bytes_per_activation": size / meta["n_activations"], "layout": meta.get("layout", "doc")}
        if args.build_only:  # keep the latencies an earlier invocation measured
            entry = {**report["sizes"].get(key, {}), **entry}
        else:
            entry["measured_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
            entry.update(bench_size(path, meta, args, report))
        report["sizes"][key] = entry
        res_path.write_text(json.dumps(report, indent=1, default=float))
    for layout in layouts if args.profile and not args.build_only else []:
        n = max(sizes)
        path, meta, _ = get_store(args.out, n, args.seed, args.memory_limit, False, layout)
        report["profile"][variant_of(layout)] = {"n_docs": n, **profile(path, meta, args)}
        res_path.write_text(json.dumps(report, indent=1, default=float))

    if cold_cache is not None:
        shutil.rmtree(cold_cache, ignore_errors=True)
    if not args.build_only:
        print("\nmedian latency, seconds (diff: A vs B = all N docs; correlate/search: corpus A = N/2 docs)")
        print(f"{'docs':>10} {'variant':>26} {'build s':>8} {'MiB':>6} {'diff':>7} {'correlate':>9} {'search':>7}"
              f"   {'cpu-s: diff':>11} {'corr.':>7} {'search':>7} {'load1m':>6}")
        def fmt(e: dict, k: str, f: str) -> str:
            return f"{e[k][f]:.3f}" if k in e else "-"

        for key, e in sorted(report["sizes"].items(), key=lambda kv: (int(kv[0].split("/")[0]), kv[0])):
            n = int(key.split("/")[0])
            print(f"{n:>10,} {e.get('variant', 'as-is'):>26} {e['build_s']:>8.1f} {e['store_bytes'] / 2**20:>6.0f} "
                  f"{fmt(e, 'diff', 'median_s'):>7} {fmt(e, 'correlate', 'median_s'):>9} "
                  f"{fmt(e, 'search', 'median_s'):>7}"
                  f"   {fmt(e, 'diff', 'cpu_s'):>11} {fmt(e, 'correlate', 'cpu_s'):>7} {fmt(e, 'search', 'cpu_s'):>7} "
                  f"{e.get('loadavg_1m_before', float('nan')):>6.1f}")
        print(f"MiniLM load {report.get('minilm_load_s', float('nan')):.2f} s; first search on a cold label cache "
              f"(embeds all {D_SAE:,} labels) {report.get('search_first_query_cold_s', float('nan')):.1f} s")
        print(f"targets: diff < 2 s at 10^6 docs, search < 0.5 s; results in {res_path}")


if __name__ == "__main__":
    main()
