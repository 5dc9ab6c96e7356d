"""Label import (Neuronpedia jsonl.gz, JSON, CSV), SAE-fit checks, several sources, and search.

A small real store (40 GoEmotions comments encoded with the shipped reader and the test SAE) is
built once; imports and searches run against it through the Python API and the CLI.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from saeembed.api import open_store
from saeembed.cli import main
from saeembed.errors import UserError
from saeembed.labels import import_labels, search_features
from tests.conftest import GOEMOTIONS_SAMPLE


@pytest.fixture(scope="module")
def small_store(tmp_path_factory: pytest.TempPathFactory, smollm2_reader, test_sae_spec: str) -> Path:
    from saeembed.encode import encode_corpus

    root = tmp_path_factory.mktemp("labels_store")
    pl.read_parquet(GOEMOTIONS_SAMPLE).head(40).write_parquet(root / "ge.parquet")
    store = root / "store.duckdb"
    encode_corpus(store, root / "ge.parquet", "ge", sae=test_sae_spec, progress=False, loaded_reader=smollm2_reader)
    return store


@pytest.fixture()
def store(small_store: Path, tmp_path: Path) -> Path:
    """A private copy, so each test starts from the encoded store without imported labels."""
    import shutil

    dst = tmp_path / "store.duckdb"
    shutil.copy(small_store, dst)
    return dst


def _sae(store: Path) -> dict:
    with open_store(store) as st:
        return st.sql("SELECT * FROM saes").row(0, named=True)


def _features(store: Path) -> pl.DataFrame:
    with open_store(store) as st:
        return st.sql("SELECT * FROM features ORDER BY feature_id, label_source")


def _neuronpedia(path: Path, layer: int, ids: list[int], model: str = "gpt-4o-mini") -> Path:
    with gzip.open(path, "wt") as fh:
        for i in ids:
            fh.write(json.dumps({"modelId": "smollm2-135m", "layer": f"{layer}-res-test", "index": str(i),
                                 "description": f"feature {i} words", "explanationModelName": model,
                                 "typeName": "oai_token-act-pair", "scores": [{"value": 0.1 * (i % 10)}]}) + "\n")
    return path


def test_import_three_formats_keeps_every_source(store: Path, tmp_path: Path) -> None:
    sae = _sae(store)
    np_file = _neuronpedia(tmp_path / "np.jsonl.gz", sae["layer"], [0, 1, 2, 5])
    js = tmp_path / "mine.json"
    js.write_text(json.dumps({"1": "greetings", "2": {"label": "anger", "description": "angry words", "score": 0.7}}))
    cs = tmp_path / "team.csv"
    cs.write_text("feature_id,label,description,score\n1,hello words,,0.2\n3,sadness,sad comments,0.9\n")

    shipped = set(_features(store).filter(pl.col("feature_id") == 1)["label_source"])  # the SAE's own rows
    res = import_labels(store, np_file)
    assert res.to_dicts() == [{"sae": sae["sae"], "label_source": "neuronpedia:gpt-4o-mini", "n_labels": 4}]
    import_labels(store, js)
    runner = CliRunner()
    out = runner.invoke(main, ["labels", "import", str(cs), "--store", str(store), "--format", "json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)[0]["label_source"] == "csv:team"

    feats = _features(store)
    one = feats.filter(pl.col("feature_id") == 1)
    assert set(one["label_source"]) == {"csv:team", "json:mine", "neuronpedia:gpt-4o-mini", *shipped}
    assert one.height == 3 + len(shipped)
    assert feats.filter((pl.col("feature_id") == 2) & (pl.col("label_source") == "json:mine")).row(
        0, named=True)["description"] == "angry words · score in the file: 0.7"
    # a file's own score measures something else than detection AUC: it is kept in the description and
    # the label stays unscored until `labels score` measures it
    five = feats.filter((pl.col("feature_id") == 5) & (pl.col("label_source") == "neuronpedia:gpt-4o-mini")).row(
        0, named=True)
    assert five["score"] is None and five["description"] == "score in the file: 0.5"
    assert feats.filter((pl.col("feature_id") == 3) & (pl.col("label_source") == "csv:team")).row(
        0, named=True)["description"] == "sad comments · score in the file: 0.9"
    # re-importing the same source replaces its rows instead of duplicating them
    import_labels(store, js)
    assert _features(store).height == feats.height


@pytest.mark.parametrize("case, content, message", [
    ("too_big.json", lambda d: json.dumps({str(d): "x"}), "outside 0.."),
    ("negative.csv", lambda d: "feature_id,label\n-1,x\n", "outside 0.."),
    ("dup.csv", lambda d: "feature_id,label\n3,x\n3,y\n", "more than once"),
    ("dup.json", lambda d: '{"3": "x", "3": "y"}', "labelled twice"),
    ("count.json", lambda d: json.dumps({str(i): "x" for i in range(d + 1)}), "has only"),
    ("empty.csv", lambda d: "feature_id,label\n4,\n", "empty"),
    ("noheader.csv", lambda d: "4,x\n", "header"),
])
def test_bad_label_files_refused_store_unchanged(store: Path, tmp_path: Path, case: str, content, message: str) -> None:
    sae = _sae(store)
    import_labels(store, _neuronpedia(tmp_path / "ok.jsonl.gz", sae["layer"], [1]))
    before = _features(store)
    bad = tmp_path / case
    bad.write_text(content(sae["d_sae"]))
    runner = CliRunner()
    out = runner.invoke(main, ["labels", "import", str(bad), "--store", str(store)])
    assert out.exit_code == 2
    assert message in out.output and "\n" == out.output[-1] and out.output.count("\n") == 1
    assert _features(store).equals(before)


def test_neuronpedia_for_other_layer_or_several_saes_refused(store: Path, tmp_path: Path) -> None:
    sae = _sae(store)
    with pytest.raises(UserError, match="layer"):
        import_labels(store, _neuronpedia(tmp_path / "l.jsonl.gz", sae["layer"] + 1, [1]))
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("\n".join(json.dumps({"modelId": "m", "layer": f"{lay}-res", "index": 1, "description": "d"})
                               for lay in (1, 2)))
    with pytest.raises(UserError, match="split it"):
        import_labels(store, mixed)
    with pytest.raises(UserError, match="no SAE"):
        import_labels(store, mixed, sae="nope")
    assert _features(store).filter(pl.col("label_source").str.starts_with("neuronpedia")).height == 0


def test_search_ranks_matching_label_first(store: Path, tmp_path: Path) -> None:
    labels = {"11": "apologies and saying sorry", "12": "sports teams and matches", "13": "cooking recipes",
              "14": "numbers and dates", "15": "anger and insults", "16": "questions about money"}
    (tmp_path / "topics.json").write_text(json.dumps(labels))
    import_labels(store, tmp_path / "topics.json")
    res = search_features(store, "apologetic tone", k=3)
    assert res.columns == ["sae", "feature_id", "label", "label_source", "label_score", "similarity",
                           "keyword_match", "score"]
    assert res.height == 3 and res["score"].is_sorted(descending=True)
    # the SAE's shipped labels ("football, game, ...", "sorry, apologize") rank too; among ours the right one wins
    ours = search_features(store, "apologetic tone", k=50).filter(pl.col("label_source") == "json:topics")
    assert ours["feature_id"][0] == 11 and ours["keyword_match"][0] > 0
    ours = search_features(store, "football game", k=50).filter(pl.col("label_source") == "json:topics")
    assert ours["feature_id"][0] == 12
    out = CliRunner().invoke(main, ["features", "--search", "recipes for dinner", "--k", "50", "--store", str(store),
                                    "--format", "json"])
    assert out.exit_code == 0, out.output
    assert [r for r in json.loads(out.stdout) if r["label_source"] == "json:topics"][0]["feature_id"] == 13
    with pytest.raises(UserError, match="empty"):
        search_features(store, "  ")
