"""stdout holds only the result, in every command: machine formats parse whole, commands whose result
is a file or a change to the store print nothing there, and no loader's progress bar ("Loading
weights", "Writing model shards") reaches either stream. Every command of the CLI must have a case
here, so a command added later cannot skip the check."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import click
import polars as pl
import pytest
from click.testing import CliRunner

from saeembed.cli import main
from tests.conftest import GOEMOTIONS_SAMPLE, REPO

JSON, EMPTY, LINES = "json", "empty", "lines"  # what stdout must hold
THIRD_PARTY_BARS = ("Loading weights", "Writing model shards", "it/s]")


def _commands(group: click.Group, prefix: str = "") -> list[str]:
    out = []
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            out += _commands(cmd, prefix + name + " ")
        else:
            out.append(prefix + name)
    return out


def _check(args: list[str], want: str, env: dict | None = None, input: str | None = None) -> str:
    res = CliRunner().invoke(main, args, env=env, input=input)
    assert res.exit_code == 0, (args, res.stderr[-1500:], res.exception)
    out = res.stdout
    if want == JSON:
        json.loads(out)  # the whole of stdout is one JSON document
    elif want == EMPTY:
        assert out == "", (args, out[:500])
    for bar in THIRD_PARTY_BARS:
        assert bar not in out and bar not in res.stderr, (args, bar)
    return out


@pytest.fixture(scope="module")
def setup(tiny_llama, tiny_sae, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("stdout")
    texts = pl.read_parquet(GOEMOTIONS_SAMPLE).select("text", "ekman")
    texts.head(60).write_parquet(root / "a.parquet")
    texts.slice(60, 60).write_parquet(root / "b.parquet")
    (root / "labels.csv").write_text("feature_id,label\n" + "".join(f"{i},thanks and praise {i}\n"
                                                                     for i in range(128)))
    return {"root": root, "store": root / "s.duckdb", "models": ["--reader", str(tiny_llama), "--sae", str(tiny_sae)],
            "llama": tiny_llama}


@pytest.mark.slow  # every command, one process each: seconds each on 2 cores
def test_every_command_prints_only_its_result(setup, tmp_path, monkeypatch) -> None:
    root, models = setup["root"], setup["models"]
    s = ["--store", str(setup["store"])]
    monkeypatch.setenv("SAEEMBED_CONFIG", str(tmp_path / "cfg"))
    for var in ("SAEEMBED_LLM_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    cases: dict[str, list[tuple[list[str], str]]] = {
        "encode": [(["encode", str(root / "a.parquet"), *s, "--name", "a", *models], EMPTY),
                   (["encode", str(root / "b.parquet"), *s, "--name", "b", *models, "--format", "json"], JSON)],
        "labels import": [(["labels", "import", str(root / "labels.csv"), *s, "--format", "json"], JSON)],
        "labels list": [(["labels", "list", *s, "--limit", "5", "--format", "json"], JSON)],
        "labels describe": [(["labels", "describe", "a", *s, "--format", "json"], JSON)],
        "labels score": [(["labels", "score", "a", *s, "--docs", "10", "--tokens", "100", "--format", "json"], JSON),
                         (["labels", "score", "a", *s, "--docs", "10", "--tokens", "100"], LINES)],
        "labels export": [(["labels", "export", str(tmp_path / "l.csv"), *s], EMPTY)],
        "corpora": [(["corpora", *s, "--format", "json"], JSON)],
        "features": [(["features", *s, "--limit", "5", "--format", "json"], JSON),
                     (["features", *s, "--search", "praise", "--format", "json"], JSON)],
        "sql": [(["sql", "SELECT count(*) AS n FROM documents", *s, "--format", "json"], JSON)],
        "show": [(["show", str(1 << 32), "--feature", "3", *s, "--format", "json"], JSON),
                 (["show", str(1 << 32), "--feature", "3", *s, "--no-color"], LINES)],
        "diff": [(["diff", "a", "b", *s, "--fdr", "1", "--min-diff", "0", "--format", "json"], JSON),
                 (["diff", "a", "b", *s, "--fdr", "1", "--min-diff", "0", "--examples", "1"], LINES),
                 (["diff", "a", "b", *s, "--format", "html", "--output", str(tmp_path / "d.html")], EMPTY)],
        "correlate": [(["correlate", "a", *s, "--min-npmi", "-1", "--min-support", "1", "--min-cooccur", "1",
                        "--format", "json"], JSON)],
        "cluster": [(["cluster", "a", *s, "--unfiltered", "--k", "2", "--format", "json"], JSON),
                    (["cluster", "a", *s, "--unfiltered", "--k", "2"], LINES)],
        "search": [(["search", "a", "praise", *s, "--format", "json"], JSON),
                   (["search", "a", "praise", *s, "--mode", "dense", "--format", "ndjson"], LINES),
                   (["search", "a", "praise", *s], LINES)],
        "atlas": [(["atlas", "a", *s, "--no-open", "--output", str(tmp_path / "atlas.parquet")], EMPTY)],
        "keys set": [(["keys", "set", "--stdin"], EMPTY)],
        "keys list": [(["keys", "list"], LINES)],
        "keys remove": [(["keys", "remove"], EMPTY)],
        "export-sae": [(["export-sae", models[3], "--out", str(tmp_path / "hub")], EMPTY)],
        "train-sae": [(["train-sae", "--corpus", f"{root / 'a.parquet'}:text", "--reader", str(setup["llama"]),
                        "--layer", "2", "--max-docs", "60", "--d-sae", "32", "--k", "4", "--steps", "5",
                        "--batch-size", "32", "--device", "cpu", "--out", str(tmp_path / "sae"),
                        "--format", "json"], JSON)],
        "drop": [(["drop", "b", *s], EMPTY)],
    }
    elsewhere = {"label": "test_label_prints_only_its_result (an LLM endpoint, slow)",
                 "browse": "test_browse_prints_nothing_on_stdout (a server)"}
    assert set(cases) | set(elsewhere) == set(_commands(main)), "every command needs a stdout case"
    for name, runs in cases.items():
        for args, want in runs:
            out = _check(args, want, input="sk-test\n" if name == "keys set" else None)
            if name == "encode" and want == JSON:
                assert json.loads(out)[0]["name"] == "b"
            if want == LINES:
                assert out.strip() and "error" not in out.lower()


def test_browse_prints_nothing_on_stdout(setup) -> None:
    store = setup["root"] / "browse.duckdb"
    code, err = 0, ""
    res = CliRunner().invoke(main, ["encode", str(setup["root"] / "a.parquet"), "--store", str(store), "--name", "a",
                                    *setup["models"]])
    assert res.exit_code == 0, res.stderr
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "saeembed", "browse", "--store", str(store), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and "saeembed browser on" not in err:
            line = proc.stderr.readline()  # type: ignore[union-attr]
            if not line and proc.poll() is not None:
                break
            err += line
        assert "saeembed browser on http://127.0.0.1:" in err, err[-1000:]
    finally:
        proc.send_signal(signal.SIGINT)
        out, rest = proc.communicate(timeout=60)
        code = proc.returncode
    assert out == "" and code in (0, 130, -signal.SIGINT), (out[:300], code, rest[-500:])


@pytest.mark.slow
def test_label_prints_only_its_result(setup) -> None:
    from tests.llm_server import ChatServer

    store = setup["root"] / "label.duckdb"
    res = CliRunner().invoke(main, ["encode", str(setup["root"] / "a.parquet"), "--store", str(store), "--name", "a",
                                    *setup["models"]])
    assert res.exit_code == 0, res.stderr
    with ChatServer() as srv:
        _check(["label", "a", "--store", str(store), "--feature", "3", "--base-url", srv.base_url, "--api-key",
                "test", "--llm-model", "smollm2-test", "--examples", "3", "--holdout", "2", "--dry-run",
                "--format", "json"], JSON)
