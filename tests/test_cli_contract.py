"""The CLI and Python API contract: options defined once, every flag
that existed keeps working, help is complete, outputs are machine-readable, data can come from
memory or stdin, labels and SAEs can be exported in formats other tools load.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import click
import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

import saeembed
from saeembed.analysis import cluster, diff
from saeembed.analysis.options import DiffOptions
from saeembed.cli import main
from saeembed.errors import UserError
from tests.conftest import GOEMOTIONS_SAMPLE, make_random_sae


def cli(*args: str, input: str | None = None, env: dict | None = None) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, list(args), input=input, env=env)
    return res.exit_code, res.stdout, res.stderr


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    out = []
    for name, cmd in group.commands.items():
        out.append((prefix + name, cmd))
        if isinstance(cmd, click.Group):
            out += _commands(cmd, prefix + name + " ")
    return out


def test_every_command_and_option_has_complete_help() -> None:
    for name, cmd in _commands(main):
        assert cmd.short_help and not cmd.get_short_help_str(limit=60).endswith("..."), name
        for param in cmd.params:
            if isinstance(param, click.Option) and not param.hidden:
                assert param.help and param.help.strip(), f"{name} {param.opts} has no help"
        code, out, err = cli(*name.split(), "--help")
        assert code == 0 and "Usage:" in out, (name, err)


@pytest.fixture(scope="module")
def tiny(tiny_llama: Path, tmp_path_factory) -> dict:
    """A store with two small GoEmotions corpora encoded by a random TopK SAE on the tiny reader."""
    root = tmp_path_factory.mktemp("contract")
    sae = make_random_sae(root / "sae", d_in=32, d_sae=128, layer=2, model_name=str(tiny_llama),
                          activation="topk", k=8)
    texts = pl.read_parquet(GOEMOTIONS_SAMPLE).select("text", "ekman")
    texts.head(40).write_parquet(root / "a.parquet")
    texts.slice(40, 40).write_parquet(root / "b.parquet")
    store = root / "s.duckdb"
    models = ["--reader", str(tiny_llama), "--sae", str(sae)]
    for name in ("a", "b"):
        code, _, err = cli("encode", str(root / f"{name}.parquet"), "--store", str(store), "--name", name, *models,
                           "--quiet")
        assert code == 0, err
    return {"root": root, "store": store, "models": models, "sae": sae, "texts": texts}


def test_old_flags_keep_working_beside_the_new_spellings(tiny: dict) -> None:
    s = ["--store", str(tiny["store"])]
    by_k = cli("cluster", *s, "a", "--unfiltered", "--k", "2", "--format", "json")
    by_clusters = cli("cluster", *s, "a", "--unfiltered", "--clusters", "2", "--format", "json")
    assert by_k[0] == 0 and by_k[1] == by_clusters[1]
    assert json.loads(by_k[1])[0]["k"] == 2
    top = cli("search", *s, "a", "anything", "--mode", "dense", "--top", "3", "--format", "json")
    k = cli("search", *s, "a", "anything", "--mode", "dense", "--k", "3", "--format", "json")
    assert top[0] == 0 and len(json.loads(top[1])) == 3 and top[1] == k[1]
    kept = cli("correlate", *s, "a", "--keep-similar-labels", "--min-npmi", "-1", "--min-support", "1",
               "--min-cooccur", "1", "--format", "json")
    assert kept[0] == 0, kept[2]
    code, out, err = cli("diff", *s, "a", "b", "--fdr", "1", "--min-diff", "0", "--n-docs", "2", "--format", "ndjson")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows and all(len(r["examples_target"]) <= 2 for r in rows)
    code, out, _ = cli("diff", *s, "a", "b", "--fdr", "1", "--min-diff", "0", "--format", "tsv")
    assert code == 0 and out.splitlines()[0].split("\t")[:3] == ["target", "rank", "feature_id"]


def test_usage_errors_are_one_line_too(tiny: dict) -> None:
    for args in (["diff", "--store", str(tiny["store"]), "a", "b", "--top", "0"],
                 ["search", "--store", str(tiny["store"]), "a", "q", "--mode", "nope"],
                 ["encode", "x.parquet", "--store", str(tiny["store"]), "--limit", "0"]):
        code, out, err = cli(*args)
        assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, (args, err)
        assert "--help" in err


def test_python_options_object_and_keywords_are_the_same_call(tiny: dict) -> None:
    st = saeembed.open_store(tiny["store"])
    a = diff(st, ["a", "b"], fdr=1, min_diff=0.0, examples=1)
    b = diff(st, ["a", "b"], DiffOptions(fdr=1, min_diff=0.0, examples=1))
    assert a.height > 0 and a.equals(b)
    with pytest.raises(UserError, match="unknown option"):
        diff(st, ["a", "b"], fdr_level=0.1)
    assert cluster(st, "a", unfiltered=True, k=2)["k"][0] == 2


def test_encode_from_memory_and_stdin_equals_encoding_the_file(tiny: dict, tmp_path: Path) -> None:
    rows = "SELECT doc_id & 4294967295 AS r, feature_id, value FROM activations WHERE doc_id >> 32 = ? ORDER BY 1, 2"
    st = saeembed.open_store(tmp_path / "m.duckdb")
    texts = tiny["texts"].head(40)
    opts = {"reader": tiny["models"][1], "sae": tiny["models"][3], "progress": False}
    st.encode(texts, "frame", **opts)
    st.encode(texts["text"].to_list(), "strings", **opts)
    st.encode(texts.to_pandas(), "pandas", **opts)
    code, _, err = cli("encode", "-", "--store", str(tmp_path / "m.duckdb"), "--name", "piped", *tiny["models"],
                       "--quiet", input="".join(json.dumps({"text": t}) + "\n" for t in texts["text"]))
    assert code == 0, err
    reference = saeembed.open_store(tiny["store"]).sql(rows, [1])
    info = st.corpora()
    assert set(info["name"]) == {"frame", "strings", "pandas", "piped"}
    for cid in info["corpus_id"]:
        assert st.sql(rows, [int(cid)]).equals(reference)
    assert json.loads(st.documents("frame")["meta"][0])["ekman"] == texts["ekman"].to_list()[0]
    assert "python:" in st.corpus("strings")["source"]


def test_labels_round_trip_through_every_export_format(tiny: dict, tmp_path: Path) -> None:
    s = ["--store", str(tiny["store"])]
    labels = tmp_path / "mine.csv"
    labels.write_text("feature_id,label,score\n" + "".join(f"{i},concept {i},0.{i % 10}\n" for i in range(20)))
    assert cli("labels", "import", str(labels), *s)[0] == 0
    before = saeembed.open_store(tiny["store"]).features().filter(pl.col("label_source") == "csv:mine")
    for name in ("out.jsonl", "out.jsonl.gz", "out.csv", "out.json"):
        code, _, err = cli("labels", "export", str(tmp_path / name), *s, "--source", "csv:mine")
        assert code == 0, err
        copy = tmp_path / f"{name}.duckdb"
        copy.write_bytes(tiny["store"].read_bytes())
        code, _, err = cli("labels", "import", str(tmp_path / name), "--store", str(copy), "--source", "again")
        assert code == 0, err
        again = saeembed.open_store(copy).sql("SELECT feature_id, label, score FROM features WHERE label_source = "
                                              "'again' ORDER BY feature_id")
        assert again.equals(before.select("feature_id", "label", "score").sort("feature_id")), name
    row = json.loads((tmp_path / "out.jsonl").read_text().splitlines()[0])
    assert {"modelId", "layer", "index", "description"} <= set(row) and row["layer"].startswith("2-")


def test_api_keys_live_in_an_owner_only_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from saeembed.llm.keys import resolve_api_key

    env = {"SAEEMBED_CONFIG": str(tmp_path / "cfg"), "SAEEMBED_LLM_API_KEY": "", "OPENAI_API_KEY": ""}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert cli("keys", "set", "--base-url", "http://localhost:8000/v1", "--stdin", input="sk-local\n")[0] == 0
    assert cli("keys", "set", input="sk-default\n")[0] == 0  # asked for, not echoed
    path = tmp_path / "cfg" / "keys.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    code, out, _ = cli("keys", "list")
    assert code == 0 and out.split() == ["default", "localhost:8000"] and "sk-" not in out
    assert resolve_api_key(None, "http://localhost:8000/v1") == "sk-local"
    assert resolve_api_key(None, "https://api.openai.com/v1") == "sk-default"
    monkeypatch.setenv("SAEEMBED_LLM_API_KEY", "sk-env")
    assert resolve_api_key(None, "http://localhost:8000/v1") == "sk-env"  # the environment wins over the file
    assert cli("keys", "remove", "--base-url", "http://localhost:8000/v1")[0] == 0
    assert "error:" in cli("keys", "remove", "--base-url", "http://localhost:8000/v1")[2]


def test_export_sae_writes_a_hub_folder_saelens_can_load(tiny: dict, tmp_path: Path) -> None:
    from saeembed.sae import open_sae
    from saeembed.sae.formats import detect_layout, load_saelens

    code, _, err = cli("export-sae", "default", "--out", str(tmp_path / "hub"))
    assert code == 0, err
    folder = tmp_path / "hub" / "blocks.18.hook_resid_post"
    assert detect_layout(folder)[0] == "saelens"
    card = (tmp_path / "hub" / "README.md").read_text()
    assert "library_name: saelens" in card and "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card
    cfg = json.loads((folder / "cfg.json").read_text())
    assert cfg["architecture"] == "topk" and cfg["k"] == 32 and cfg["metadata"]["hook_name"] == folder.name
    original, exported = open_sae("default").sae, load_saelens(folder)
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        assert np.array_equal(getattr(original, name).detach().numpy(), getattr(exported, name).detach().numpy())
    explanations = [json.loads(x) for x in (folder / "explanations.jsonl").read_text().splitlines()]
    assert len(explanations) > 6000 and explanations[0]["index"] == "0"
    # labels only, one per (latent, source): the context a latent also ships names nothing
    assert not any(e["explanationModelName"] == "context" for e in explanations)
    assert len({(e["index"], e["explanationModelName"]) for e in explanations}) == len(explanations)
    assert (folder / "sparsity.safetensors").exists()  # one density per latent, whatever rows it ships
    code, _, err = cli("export-sae", "default", "--out", str(tmp_path / "hub"))
    assert code == 2 and "--overwrite" in err


def test_tables_are_readable_rounded_joined_captioned_and_wrapped(tiny: dict) -> None:
    s = ["--store", str(tiny["store"])]
    labels = tiny["root"] / "long_labels.csv"
    labels.write_text("feature_id,label\n" + "".join(f'{i},"an unusually long label, for latent {i}, that wraps"\n'
                                                     for i in range(128)))
    assert cli("labels", "import", str(labels), *s, "--source", "long")[0] == 0
    code, out, err = cli("cluster", *s, "a", "--unfiltered", "--k", "2", env={"COLUMNS": "90"})
    assert code == 0, err
    lines = out.splitlines()
    assert "2 clusters (" in err  # what was clustered: on stderr, so stdout starts with the table
    assert lines[0].split()[:3] == ["cluster", "size", "share"], out[:300]
    assert max(len(line) for line in lines) <= 90  # wide cells wrap instead of running off the screen
    assert not re.search(r"\[[0-9'\"]", out)  # no Python list reprs
    assert "wraps; an" in out  # labels joined with "; " (a label holds commas itself)
    figures = re.findall(r"\b\d+\.\d+\b", out)
    assert figures and all(len(f.split(".")[1]) <= 3 for f in figures)  # rounded
    rows = json.loads(cli("cluster", *s, "a", "--unfiltered", "--k", "2", "--format", "json")[1])
    assert isinstance(rows[0]["top_labels"], list)  # machines get the raw values
    assert any(len(repr(d).split(".")[1]) > 3 for r in rows for d in r["top_diffs"])
    code, out, err = cli("diff", *s, "a", "b", "--fdr", "1", "--min-diff", "0", env={"COLUMNS": "100"})
    assert code == 0 and "a (40 documents) vs b (40)" in err, err[-300:]  # what was compared: on stderr
    assert out.splitlines()[0].split()[:2] == ["target", "rank"], out[:300]  # stdout starts with the table
