"""Encoding on Ray (--ray, --devices): rows (token positions included) equal a single-process
encode, also when a worker is killed mid-shard (a real os._exit, restarted by Ray) or the driver is
killed (kill -9, the re-run resumes from the finished shards without recomputing them); work folder and corpus on a
pyarrow.fs URI; every bad address, URI or device is one line, exit 2, store unchanged."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

import saeembed
from saeembed.cli import main
from saeembed.encode import encode_corpus
from tests.conftest import GOEMOTIONS_SAMPLE, REPO

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow  # each test starts a local Ray cluster (10-25 s)


def cli(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, list(args))
    return res.exit_code, res.stdout, res.stderr


@pytest.fixture(scope="module")
def cluster():
    """A local Ray with 2 CPU workers, shared by the module (the encodes attach to it)."""
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_llama, tiny_sae):
    """A 48-document corpus and its rows from a single-process encode (the reference)."""
    root = tmp_path_factory.mktemp("ray")
    corpus = root / "c.parquet"
    pl.read_parquet(GOEMOTIONS_SAMPLE).head(48).select("text").write_parquet(corpus)
    args = {"reader": str(tiny_llama), "sae": str(tiny_sae), "shard_docs": 4, "batch_tokens": 256,
            "progress": False}
    import torch

    # one thread, as each CPU actor runs: fp32 CPU matmuls differ in the last bits between thread
    # counts (measured 4e-9 on this reader), and the comparison below is exact
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        encode_corpus(root / "clean.duckdb", corpus, "c", **args)
    finally:
        torch.set_num_threads(threads)
    return root, corpus, args, _rows(root / "clean.duckdb", "c")


def _rows(store: Path, name: str) -> pl.DataFrame:
    """The corpus' activations by source row (with the token positions highlights read), each document's
    token count and token ends."""
    s = saeembed.open_store(store)
    cid = s.corpus(name)["corpus_id"]
    df = s.sql("""SELECT d.row_idx, d.n_tokens, d.token_ends, a.feature_id, a.value, a.total, a.n_active,
                         a.peak_pos
                  FROM activations a JOIN documents d USING (doc_id) WHERE d.corpus_id = ? ORDER BY 1, 4""", [cid])
    s.close()
    assert df["peak_pos"].null_count() == 0 and df["token_ends"].null_count() == 0
    return df


def test_rows_equal_single_process_when_a_worker_dies_mid_shard(cluster, setup, tmp_path, monkeypatch) -> None:
    root, corpus, args, clean = setup
    marker = tmp_path / "died"
    monkeypatch.setenv("SAEEMBED_FAULT_EXIT_ONCE", str(marker))
    store = tmp_path / "r.duckdb"
    encode_corpus(store, corpus, "c", ray="auto", **args)
    assert marker.exists(), "the fault hook must have killed a worker for this test to mean anything"
    pid = int(marker.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # that worker process is really gone; Ray restarted the actor and redid its shard
    assert clean.height > 200 and _rows(store, "c").equals(clean)
    assert not Path(f"{store}.work").exists()


def test_rerun_of_a_stored_corpus_on_ray_is_a_no_op_that_clears_stale_work(cluster, setup, tmp_path) -> None:
    """A stored corpus is recognised before any actor starts, as in a local encode, and leftover shards
    of an earlier crashed run of the same name are deleted instead of lingering next to the store."""
    import shutil

    from saeembed.encode.workdir import work_dir

    root, corpus, args, clean = setup
    store = tmp_path / "s.duckdb"
    shutil.copy(root / "clean.duckdb", store)
    stale = work_dir(store, "c")
    stale.mkdir(parents=True)
    (stale / "docs-000000.parquet").write_bytes(b"left by a crashed run")
    row = encode_corpus(store, corpus, "c", ray="auto", **args)
    assert row["n_docs"] == 48 and _rows(store, "c").equals(clean)
    assert not Path(f"{store}.work").exists()
    # the same with the work folder on shared storage (a URI): its leftovers go too
    shared = tmp_path / "shared"
    (shared / stale.name).mkdir(parents=True)
    (shared / stale.name / "docs-000000.parquet").write_bytes(b"left by a crashed run")
    encode_corpus(store, corpus, "c", ray="auto", work_dir=shared.as_uri(), **args)
    assert list(shared.iterdir()) == [] and not Path(f"{store}.work").exists()
    encode_corpus(store, corpus, "c", ray="auto", work_dir=shared.as_uri(), **args)  # nothing left: still fine


def test_devices_cpu_cpu_with_uri_work_dir_uri_corpus_and_parquet_keep(cluster, setup, tmp_path) -> None:
    root, corpus, args, clean = setup
    store = tmp_path / "d.duckdb"
    shared = tmp_path / "shared"
    row = encode_corpus(store, corpus.as_uri(), "c", devices="cpu,cpu", work_dir=shared.as_uri(),
                        keep="parquet", **args)
    assert row["source"] == corpus.as_uri() and row["n_docs"] == 48
    assert _rows(store, "c").equals(clean)
    s = saeembed.open_store(store)
    assert s.sql("SELECT count(*) AS n FROM parquet_corpora")["n"][0] == 1
    s.close()
    assert not any(shared.iterdir()), "the work folder is removed once the corpus is registered"


def test_driver_killed_mid_run_resumes_without_recomputing(cluster, setup, tmp_path) -> None:
    root, corpus, args, clean = setup
    store, shared = tmp_path / "k.duckdb", tmp_path / "shared"
    cmd = [sys.executable, "-m", "saeembed", "encode", str(corpus), "--store", str(store), "--name", "c",
           "--reader", args["reader"], "--sae", args["sae"], "--shard-docs", "4", "--batch-tokens", "256",
           "--quiet", "--ray", cluster, "--ray-workers", "1", "--work-dir", str(shared)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    env.pop("SAEEMBED_FAULT_EXIT_ONCE", None)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and len(list(shared.glob("*/acts-*.parquet"))) < 3 and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    done = sorted(shared.glob("*/acts-*.parquet"))
    assert 3 <= len(done) < 12, f"the kill must land mid-run ({len(done)} of 12 shards; {err[-300:]!r})"
    assert not saeembed.open_store(store).corpora()["name"].to_list()  # nothing half-ingested
    # mark one finished shard: if the re-run recomputed it, the mark would be gone
    marked = done[0]
    shard = int(marked.stem.split("-")[1])
    pl.read_parquet(marked).with_columns(pl.col("value") + 1000).write_parquet(marked)
    encode_corpus(store, corpus, "c", ray=cluster, work_dir=str(shared), **args)
    got = _rows(store, "c")
    rows = pl.Series(range(shard * 4, shard * 4 + 4))
    in_shard = pl.col("row_idx").is_in(rows.to_list())
    assert got.filter(~in_shard).equals(clean.filter(~in_shard))
    assert got.filter(in_shard)["value"].to_list() == (clean.filter(in_shard)["value"] + 1000).to_list()


def test_bad_addresses_uris_and_devices_are_one_line(cluster, setup, tmp_path, monkeypatch) -> None:
    root, corpus, args, _ = setup
    store = tmp_path / "bad.duckdb"
    base = [str(corpus), "--store", str(store), "--name", "b", "--reader", args["reader"], "--sae", args["sae"],
            "--quiet"]
    cases = [
        (["--ray", "127.0.0.1:1"], "cannot reach the Ray cluster at 127.0.0.1:1"),
        (["--ray", "not an address"], "is not a Ray address"),
        (["--ray", "auto", "--work-dir", "nosuch://bucket/x"], "cannot open work directory"),
        (["--ray", "auto", "--ray-workers", "5"], "has 2 CPU slot(s)"),
        (["--devices", "cuda:0"], "--devices"),
        (["--devices", "tpu"], "is not a device"),
        (["--work-dir", str(tmp_path / "w")], "apply to Ray runs"),
    ]
    for extra, want in cases:
        code, _, err = cli("encode", *base, *extra)
        assert code == 2 and want in err and err.startswith("error: ") and len(err.strip().splitlines()) == 1, \
            (extra, err)
    for uri, want in (("nosuch://bucket/c.parquet", "cannot open corpus"),
                      ((tmp_path / "none.parquet").as_uri(), "not found")):
        code, _, err = cli("encode", uri, *base[1:], "--ray", "auto")
        assert code == 2 and want in err and len(err.strip().splitlines()) == 1, (uri, err)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    code, _, err = cli("encode", *base, "--ray", "auto")
    assert code == 2 and "pip install 'saeembed[ray]'" in err and len(err.strip().splitlines()) == 1, err
    assert not store.exists() and not Path(f"{store}.work").exists()
