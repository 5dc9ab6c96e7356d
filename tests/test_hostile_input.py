"""Hostile input: every failure a user can cause is one
line, a non-zero exit and an unchanged store; nothing outside the store's work folder is ever
deleted; no user string is expanded as a glob; no pickle is executed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import polars as pl
import pytest
from click.testing import CliRunner

import saeembed
from saeembed.cli import main
from saeembed.corpus import read_corpus
from saeembed.encode.workdir import work_dir
from saeembed.errors import UserError
from saeembed.names import check_corpus_name, default_corpus_name
from tests.cli_support import cli, one_line_error
from tests.conftest import GOEMOTIONS_SAMPLE


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def table_counts(store: Path) -> dict[str, int]:
    s = saeembed.open_store(store)
    return {t: s.sql(f"SELECT count(*) AS n FROM {t}")["n"][0] for t in ("corpora", "documents", "activations")}


@pytest.fixture(scope="module")
def ge10(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ge10") / "ge.parquet"
    pl.read_parquet(GOEMOTIONS_SAMPLE).head(10).select("text").write_parquet(path)
    return path


@pytest.fixture()
def models(tiny_llama: Path, topk_sae: Path) -> list[str]:
    return ["--reader", str(tiny_llama), "--sae", str(topk_sae), "--quiet"]


def encode(corpus: Path, store: Path, models: list[str], *extra: str) -> tuple[int, str, str]:
    return cli("encode", str(corpus), "--store", str(store), *models, *extra)


# ------------------------------------------------------------------------- names are not paths --
def test_names_that_look_like_paths_are_refused_and_delete_nothing(tmp_path, ge10, models):
    home = tmp_path / "home"
    home.mkdir()
    (home / "unrelated.txt").write_text("keep me")
    store = home / "s.duckdb"
    assert encode(ge10, store, models, "--name", "ge")[0] == 0
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "data.txt").write_text("keep me too")
    unfinished = work_dir(store, "other")  # another corpus's interrupted work
    unfinished.mkdir(parents=True)
    (unfinished / "acts-000000.parquet").write_bytes(b"shard")
    before_home, before_victim, before_rows = tree(home), tree(victim), table_counts(store)

    for bad in ("..", ".", str(victim), "../victim", "a*", "x?", "x[1]", "a b", "x/y", "-rf", "n" * 300, ""):
        code, _, err = encode(ge10, store, models, "--name", bad)
        assert "name" in one_line_error(code, err), bad
    assert tree(home) == before_home and tree(victim) == before_victim
    assert table_counts(store) == before_rows

    # no --name: the default comes from the file's stem, made safe, never ".."
    sub = home / "sub"
    sub.mkdir()
    cwd = os.getcwd()
    try:
        os.chdir(sub)
        code, _, err = cli("encode", "..", "--store", "../s.duckdb", *models)
    finally:
        os.chdir(cwd)
    one_line_error(code, err)
    assert "--name" in err and tree(home) == before_home
    assert default_corpus_name("my corpus (v2).parquet") == "my_corpus__v2_"
    assert check_corpus_name("gpt-4.1_outputs") == "gpt-4.1_outputs"


def test_glob_characters_in_the_store_path_never_pull_in_other_shards(tmp_path, ge10, models):
    clean = tmp_path / "clean.duckdb"
    assert encode(ge10, clean, models, "--name", "c")[0] == 0
    # an interrupted encode of another store whose path the glob "x[1]" would match
    decoy = work_dir(tmp_path / "x1.duckdb", "c")
    decoy.mkdir(parents=True)
    pl.DataFrame({"row_idx": [0], "feature_id": [99999], "value": [9.0], "total": [9.0], "n_active": [1]},
                 schema={"row_idx": pl.Int64, "feature_id": pl.Int32, "value": pl.Float32, "total": pl.Float32,
                         "n_active": pl.Int32}).write_parquet(decoy / "acts-000000.parquet")
    globby = tmp_path / "x[1].duckdb"
    code, _, err = encode(ge10, globby, models, "--name", "c")
    assert code == 0, err
    q = "SELECT doc_id & 4294967295 AS r, feature_id, value FROM activations ORDER BY 1, 2"
    assert saeembed.open_store(globby).sql(q).equals(saeembed.open_store(clean).sql(q))
    assert (decoy / "acts-000000.parquet").exists()
    # a corpus file whose name holds glob characters is read as that one file
    star = tmp_path / "g*.parquet"
    pl.read_parquet(ge10).head(3).write_parquet(star)
    pl.read_parquet(ge10).write_parquet(tmp_path / "gg.parquet")
    assert read_corpus(star).n_docs == 3


# -------------------------------------------------------------------------- the store file --
@pytest.mark.slow  # a dozen encodes: seconds each on 2 cores
def test_store_must_be_a_duckdb_file_and_creation_leaves_nothing_behind(tmp_path, ge10, models):
    not_a_store = tmp_path / "data.parquet"
    pl.read_parquet(ge10).write_parquet(not_a_store)
    before = not_a_store.read_bytes()
    err = one_line_error(*_code_err(encode(ge10, not_a_store, models, "--name", "x")))
    assert "not a DuckDB store" in err and not_a_store.read_bytes() == before
    err = one_line_error(*_code_err(cli("corpora", "--store", str(not_a_store))))
    assert "not a DuckDB store" in err

    empty = tmp_path / "empty.duckdb"  # what a crash during creation used to leave
    empty.write_bytes(b"")
    assert encode(ge10, empty, models, "--name", "x")[0] == 0
    assert saeembed.open_store(empty).corpora()["name"].to_list() == ["x"]

    # a full disk while creating the store: one line, and no 0-byte store left to break later commands
    script = ("import resource, signal, sys\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, 150_000))\n"
              "from saeembed.cli import main\n"
              "sys.argv = ['saeembed'] + sys.argv[1:]\nmain()\n")
    full = tmp_path / "full.duckdb"
    proc = subprocess.run([sys.executable, "-c", script, "encode", str(ge10), "--store", str(full), "--name", "x",
                           *models], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: cannot create store")  # after progress lines
    assert not full.exists() and not Path(f"{full}.wal").exists()


def _code_err(res: tuple[int, str, str]) -> tuple[int, str]:
    return res[0], res[2]


# ----------------------------------------------------------------------------- bad inputs --
def test_bad_specs_corpora_and_limits_give_one_line(tmp_path, ge10, models, tiny_llama):
    store = tmp_path / "s.duckdb"
    err = one_line_error(*_code_err(cli("encode", str(ge10), "--store", str(store), "--name", "x", "--reader",
                                        str(tiny_llama), "--sae", "hf:owner/repo/../../../../etc", "--quiet")))
    assert "'..'" in err
    for limit in ("0", "-2"):
        err = one_line_error(*_code_err(encode(ge10, store, models, "--name", "x", "--limit", limit)))
        assert "--limit" in err

    lone = tmp_path / "lone.jsonl"
    lone.write_text('{"text": "fine"}\n{"text": "broken \\ud800 here"}\n')
    err = one_line_error(*_code_err(encode(lone, store, models, "--name", "x")))
    assert "surrogate" in err and "line 2" in err
    pair = tmp_path / "pair.jsonl"
    pair.write_text('{"text": "an emoji \\ud83d\\ude00 is fine"}\n')
    assert read_corpus(pair).docs["text"][0] == "an emoji \U0001F600 is fine"

    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    err = one_line_error(*_code_err(encode(fifo, store, models, "--name", "x")))
    assert "not a regular file" in err and time.monotonic() - t0 < 10
    assert not store.exists()  # nothing was ever encoded, so no store was created


def test_pickled_llamascope_checkpoint_is_refused_without_running_it(tmp_path, ge10, models, tiny_llama):
    import torch

    ckpt = tmp_path / "llamascope"
    (ckpt / "checkpoints").mkdir(parents=True)
    (ckpt / "hyperparams.json").write_text(json.dumps({"d_model": 32, "d_sae": 64, "hook_point_in":
                                                       "blocks.2.hook_resid_post", "act_fn": "relu"}))
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"sae": {"encoder.weight": Evil()}}, ckpt / "checkpoints" / "final.pt")
    code, _, err = cli("encode", str(ge10), "--store", str(tmp_path / "s.duckdb"), "--name", "x", "--reader",
                       str(tiny_llama), "--sae", str(ckpt), "--quiet")
    err = one_line_error(code, err)
    assert "tensor-only" in err and not marker.exists()


# ---------------------------------------------------------------------- formats that can't --
def test_csv_holds_lists_as_json_and_json_holds_no_infinity(tmp_path, ge10, models):
    store = tmp_path / "s.duckdb"
    assert encode(ge10, store, models, "--name", "a")[0] == 0
    second = tmp_path / "b.parquet"
    pl.read_parquet(GOEMOTIONS_SAMPLE).slice(10, 10).select("text").write_parquet(second)
    assert encode(second, store, models, "--name", "b")[0] == 0

    code, out, err = cli("sql", "--store", str(store), "SELECT [1, 2] AS l, {'k': 'v'} AS s", "--format", "csv")
    assert code == 0, err
    row = next(iter(pl.read_csv(out.encode()).iter_rows(named=True)))
    assert json.loads(row["l"]) == [1, 2] and json.loads(row["s"]) == {"k": "v"}
    code, out, err = cli("diff", "--store", str(store), "a", "b", "--fdr", "1", "--min-diff", "0", "--format", "csv")
    assert code == 0, err
    assert pl.read_csv(out.encode()).height > 0
    code, out, err = cli("cluster", "--store", str(store), "a", "--unfiltered", "--k", "2", "--format", "csv")
    assert code == 0, err
    assert isinstance(json.loads(pl.read_csv(out.encode())["top_features"][0]), list)

    code, out, err = cli("sql", "--store", str(store), "SELECT 'inf'::DOUBLE AS x, '-inf'::DOUBLE AS y, "
                         "'nan'::DOUBLE AS z", "--format", "json")
    assert code == 0, err

    def no_constants(name: str) -> None:
        raise AssertionError(f"invalid JSON constant {name}")

    assert json.loads(out, parse_constant=no_constants) == [{"x": "inf", "y": "-inf", "z": None}]


def test_label_files_with_non_integer_ids_or_infinite_scores_are_refused(tmp_path, ge10, models):
    store = tmp_path / "s.duckdb"
    assert encode(ge10, store, models, "--name", "a")[0] == 0
    before = saeembed.open_store(store).sql("SELECT count(*) AS n FROM features")["n"][0]
    for i, (fid, score) in enumerate([("nan", "1"), ("inf", "1"), ("99999999999999999999999", "1"), ("1.5", "1"),
                                      ("3", "inf"), ("3", "nan")]):
        f = tmp_path / f"l{i}.csv"
        f.write_text(f"feature_id,label,score\n{fid},some label,{score}\n")
        err = one_line_error(*_code_err(cli("labels", "import", str(f), "--store", str(store))))
        assert ("latent id" in err) if score == "1" else ("score" in err)
    js = tmp_path / "inf.json"
    js.write_text('{"3": {"label": "x", "score": Infinity}}')
    assert "finite" in one_line_error(*_code_err(cli("labels", "import", str(js), "--store", str(store))))
    assert saeembed.open_store(store).sql("SELECT count(*) AS n FROM features")["n"][0] == before


# ------------------------------------------------------------------------------ concurrency --
def _encode_cmd(corpus: Path, store: Path, name: str, models: list[str], *extra: str) -> list[str]:
    return [sys.executable, "-m", "saeembed", "encode", str(corpus), "--store", str(store), "--name", name,
            *models, *extra]


@pytest.fixture(scope="module")
def ge300(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ge300") / "ge.parquet"
    pl.read_parquet(GOEMOTIONS_SAMPLE).head(300).select("text").write_parquet(path)
    return path


@pytest.mark.slow  # a subprocess or a training run: minutes on a loaded 2-core machine
def test_two_identical_encodes_one_refuses_in_one_line_the_other_finishes(tmp_path, ge300, models):
    store = tmp_path / "s.duckdb"
    first = subprocess.Popen(_encode_cmd(ge300, store, "c", models, "--shard-docs", "4", "--batch-tokens", "128"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lock = work_dir(store, "c") / ".lock"
    deadline = time.time() + 60
    while time.time() < deadline and not list(work_dir(store, "c").glob("acts-*.parquet")):
        time.sleep(0.02)
    code, _, err = encode(ge300, store, models, "--name", "c", "--shard-docs", "4", "--batch-tokens", "128")
    assert lock.exists() or first.poll() is not None
    if first.poll() is None:  # the second one ran while the first held the work folder
        assert "already encoding" in one_line_error(code, err)
    _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err
    assert saeembed.open_store(store).corpus("c")["n_docs"] == 300
    assert not work_dir(store, "c").exists()


@pytest.mark.slow  # a subprocess or a training run: minutes on a loaded 2-core machine
def test_writers_wait_for_readers_and_each_other(tmp_path, ge10, models):
    store = tmp_path / "s.duckdb"
    assert encode(ge10, store, models, "--name", "a")[0] == 0
    notebook = saeembed.open_store(store)
    assert notebook.corpora().height == 1  # a notebook's Store: the connection is closed after the call
    held = duckdb.connect(str(store), read_only=True)  # a long query in another process
    second = tmp_path / "b.parquet"
    pl.read_parquet(GOEMOTIONS_SAMPLE).slice(10, 10).select("text").write_parquet(second)
    procs = [subprocess.Popen(_encode_cmd(c, store, n, models, "--wait", "60"), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for c, n in ((second, "b"), (ge10, "c"))]
    seen = []
    for p in procs:  # both encode everything, then wait for the reader's lock instead of failing
        lines = []
        while not lines or ("waiting" not in lines[-1] and lines[-1]):
            lines.append(p.stderr.readline())
        seen.append("".join(lines))
    assert all("waiting" in s and p.poll() is None for s, p in zip(seen, procs)), seen
    held.close()
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    assert sorted(notebook.corpora()["name"].to_list()) == ["a", "b", "c"]

    blocker = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time\n"
                                f"c = duckdb.connect({str(store)!r})\nprint('held', flush=True)\ntime.sleep(60)"],
                               stdout=subprocess.PIPE, text=True)  # a writer that does not let go
    try:
        assert blocker.stdout.readline().strip() == "held"
        code, _, err = encode(second, store, models, "--name", "d", "--wait", "1")
    finally:
        blocker.kill()
        blocker.wait()
    assert code == 2 and err.strip().splitlines()[-1].startswith("error: store"), err  # after the notice
    assert "still in use" in err and "Traceback" not in err


# ------------------------------------------------------------------------------ LLM calls --
def test_llm_endpoints_that_refuse_or_stay_silent_fail_fast(tmp_path):
    from saeembed.llm import make_llm

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    llm = make_llm("openai", "m", base_url=f"http://127.0.0.1:{port}/v1", api_key="x", use_cache=False)
    t0 = time.monotonic()
    with pytest.raises(UserError, match="connection refused"):
        llm.complete([{"role": "user", "content": "hi"}])
    assert time.monotonic() - t0 < 10

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(silent.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        llm = make_llm("openai", "m", base_url=f"http://127.0.0.1:{silent.getsockname()[1]}/v1", api_key="x",
                       use_cache=False, timeout=1.0)
        t0 = time.monotonic()
        with pytest.raises(UserError, match="did not answer"):
            llm.complete([{"role": "user", "content": "hi"}])
        assert time.monotonic() - t0 < 10
    finally:
        stop.set()
        t.join()
        for c in accepted:
            c.close()
        silent.close()


# ----------------------------------------------------------------- read-only file systems --
@pytest.fixture()
def read_only(tmp_path):
    """Make a folder read-only for this process: a read-only bind mount as root (root ignores
    permissions), no write permission otherwise; skipped where neither can be arranged."""
    made: list[Path] = []

    def make(folder: Path) -> Path:
        if os.geteuid() != 0:
            folder.chmod(0o555)
        elif subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True).returncode != 0:
            pytest.skip("cannot bind-mount here (no CAP_SYS_ADMIN); run as a normal user to test permissions")
        else:
            made.append(folder)
            subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True, capture_output=True)
        return folder

    yield make
    for folder in made:
        subprocess.run(["umount", str(folder)], check=True, capture_output=True)


def test_encode_on_a_read_only_file_system_is_one_line_and_writes_nothing(tmp_path, ge10, models, read_only):
    ro = tmp_path / "ro"
    ro.mkdir()
    existing = ro / "s.duckdb"
    assert encode(ge10, existing, models, "--name", "a")[0] == 0
    before = tree(ro)
    read_only(ro)
    into_ro_folder = ["--keep", "parquet", "--parquet-dir", str(ro / "pq")]
    for store, extra in ((ro / "new.duckdb", []), (existing, []), (tmp_path / "w.duckdb", into_ro_folder)):
        code, _, err = encode(ge10, store, models, "--name", "b", *extra)
        assert code == 2 and "Traceback" not in err, err
        last = err.strip().splitlines()[-1]
        assert last.startswith("error: ") and ("read-only" in last or "not writable" in last), err
    assert tree(ro) == before and not (tmp_path / "w.duckdb").exists()
    assert saeembed.open_store(existing).corpora()["name"].to_list() == ["a"]


def test_file_system_errors_of_any_command_are_one_line():
    import errno

    from saeembed.cli.base import file_system_error

    assert "permission denied: /x/s.duckdb" in file_system_error(PermissionError(errno.EACCES, "Permission denied",
                                                                                 "/x/s.duckdb"))
    assert "read-only" in file_system_error(OSError(errno.EROFS, "Read-only file system", "/x"))
    assert "no space left" in file_system_error(OSError(errno.ENOSPC, "No space left on device", "/x"))
    assert file_system_error(FileNotFoundError(errno.ENOENT, "No such file", "/x")) is None  # a bug, not the disk


# ------------------------------------------------------------------------ label contents --
def test_label_import_refuses_labels_that_are_not_text(tmp_path, ge10, models):
    store = tmp_path / "s.duckdb"
    assert encode(ge10, store, models, "--name", "a")[0] == 0
    before = saeembed.open_store(store).sql("SELECT count(*) AS n FROM features")["n"][0]
    bad = {"null.json": '{"3": null}', "nan.json": '{"3": NaN}', "number.json": '{"3": 5}',
           "bool.json": '{"3": true}', "list.json": '{"3": ["a", "b"]}', "nested.json": '{"3": {"label": 5}}',
           "description.json": '{"3": {"label": "fine", "description": 7}}',
           "np.jsonl": '{"modelId": "m", "layer": "2-x", "index": "3", "description": null}\n'}
    for name, text in bad.items():
        (tmp_path / name).write_text(text)
        err = one_line_error(*_code_err(cli("labels", "import", str(tmp_path / name), "--store", str(store))))
        assert "is not text" in err, (name, err)
    assert saeembed.open_store(store).sql("SELECT count(*) AS n FROM features")["n"][0] == before
    (tmp_path / "ok.json").write_text('{"3": " polite thanks ", "4": {"label": "anger", "description": null}}')
    assert cli("labels", "import", str(tmp_path / "ok.json"), "--store", str(store))[0] == 0
    got = saeembed.open_store(store).sql("SELECT feature_id, label FROM features WHERE label_source = 'json:ok' "
                                         "ORDER BY 1")
    assert got.rows() == [(3, "polite thanks"), (4, "anger")]


# --------------------------------------------------------------- documents in memory/stdin --
def test_python_encode_of_a_lone_surrogate_is_one_clear_error(tmp_path, tiny_llama, topk_sae):
    store = saeembed.open_store(tmp_path / "s.duckdb")
    with pytest.raises(UserError, match=r"lone UTF-16 surrogate \(\\ud800 in 'bad \\ud800 x'\)"):
        store.encode(["fine", "bad \ud800 x"], name="x", reader=str(tiny_llama), sae=str(topk_sae), progress=False)
    assert not (tmp_path / "s.duckdb").exists()


def test_documents_that_are_not_text_are_refused_with_their_line(tmp_path, ge10, models):
    store = tmp_path / "s.duckdb"
    for stdin, want in (('{"text": "fine"}\n{"text": 5}\n', "line 2 holds 5 as 'text'"),
                        ('{"text": "fine"}\n{"text": ["a"]}\n', "line 2 holds [\"a\"]"),
                        ('{"text": "fine"}\n{"text": "also fine"}\n{"text": oops}\n', "line 3 is not JSON"),
                        ('{"text": "fine"}\n{"text": "a\\u0000b"}\n', "NUL character"),
                        ('{"text": "fine"}\n{"text": "a\u2028b"}\n', None)):  # U+2028 inside a string is text
        res = CliRunner().invoke(main, ["encode", "-", "--store", str(store), "--name", "x", *models], input=stdin)
        if want is None:
            assert res.exit_code == 0, res.stderr
        else:
            assert want in one_line_error(res.exit_code, res.stderr), (stdin, res.stderr)
    messages = tmp_path / "m.jsonl"
    messages.write_text('{"messages": "not json"}\n')
    err = one_line_error(*_code_err(encode(messages, store, models, "--name", "m", "--messages-col", "messages")))
    assert "{role, content}" in err and "{{" not in err
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("a document")
    os.mkfifo(folder / "b.txt")
    t0 = time.monotonic()
    err = one_line_error(*_code_err(encode(folder, store, models, "--name", "f")))
    assert "b.txt" in err and "not a regular file" in err and time.monotonic() - t0 < 30


def test_options_that_contradict_or_escape_are_refused(tmp_path, ge10, models, tiny_llama):
    store = tmp_path / "s.duckdb"
    err = one_line_error(*_code_err(cli("encode", str(ge10), "--store", str(store), "--name", "x", "--reader",
                                        str(tiny_llama), "--sae", "hf:owner/repo/~/x", "--quiet")))
    assert "'~'" in err
    for extra in (["--devices", "cpu,cpu", "--ray", "auto"], ["--devices", "cpu,cpu", "--ray-workers", "2"]):
        err = one_line_error(*_code_err(encode(ge10, store, models, "--name", "x", *extra)))
        assert "--devices" in err and "one or the other" in err
    assert not store.exists()
    assert encode(ge10, store, models, "--name", "x")[0] == 0
    err = one_line_error(*_code_err(cli("search", "--store", str(store), "x", " , ")))
    assert "query is empty" in err and "--query" not in err
