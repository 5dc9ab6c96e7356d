"""Shared fixtures: tiny real models built on the fly, the shipped SmolLM2 reader, real corpora.

Everything here is real code on real weights and real text; nothing of ours is mocked.
``SAEEMBED_TEST_SAE`` may point the shared store at another SAE checkpoint while developing.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Callable

import polars as pl
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SAEEMBED_DATASETS") or REPO.parent / "shared" / "datasets")  # real corpora
DATASETS = REPO / "datasets"
GOEMOTIONS_SAMPLE = DATASETS / "goemotions" / "sample.parquet"  # 1,500 labelled comments, Apache-2.0


# Fixtures that load the shipped SmolLM2 reader (seconds to minutes): every test that uses one of them,
# directly or through another fixture, is marked ``slow``, so ``pytest -m "not slow"`` is a fast loop.
READER_FIXTURES = {"smollm2_reader", "real_store", "faces_store"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if READER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    # Under pytest-xdist (--dist loadfile --no-loadscope-reorder) files go to the processes in this order:
    # one file that needs the shared store first (its process converts the reader on a fresh machine and
    # encodes the store), then the files that need no reader (the other process runs them meanwhile
    # instead of waiting for the reader), then those that need the reader but not the store, then the
    # rest; within each group the files with more tests first, so the run ends on short files.
    uses = {"store": {"real_store", "faces_store"}, "reader": READER_FIXTURES}
    needs: dict[Path, set[str]] = {}
    counts: dict[Path, int] = {}
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        needs.setdefault(item.path, set()).update(k for k, v in uses.items() if v & names)
        counts[item.path] = counts.get(item.path, 0) + 1
    builder = next((item.path for item in items if "store" in needs[item.path]), None)

    def group(path: Path) -> int:
        return 0 if path == builder else 3 if "store" in needs[path] else 2 if needs[path] else 1

    items.sort(key=lambda item: (group(item.path), -counts[item.path], str(item.path)))


def shared_dataset(name: str) -> Path:
    """A corpus from ../shared/datasets (tests skip cleanly where it is absent)."""
    path = SHARED / name / "data.parquet"
    if not path.exists():
        pytest.skip(f"shared dataset {name} not available at {path}")
    return path


def check_shipped_labels(labels: pl.DataFrame, d_sae: int) -> None:
    """A shipped ``labels.parquet`` as ``scripts/score_shipped_labels.py`` writes it: exactly one label per
    latent (the c-TF-IDF label, or the readable one that scored better), at most one row per (latent,
    source), a ``context`` row (unscored) for most latents, detection scores in [0, 1] for the labels,
    and one shown row per latent by the rule every reader applies."""
    from saeembed.labelrule import CONTEXT_LABEL_SOURCE, shown_labels

    assert labels["feature_id"].dtype == pl.Int32
    assert labels["label"].null_count() == 0 and (labels["label"].str.len_chars() > 0).all()
    assert labels.group_by("feature_id", "label_source").len()["len"].max() == 1
    named = labels.filter(pl.col("label_source") != CONTEXT_LABEL_SOURCE).sort("feature_id")
    assert named["feature_id"].to_list() == list(range(d_sae))
    contexts = labels.filter(pl.col("label_source") == CONTEXT_LABEL_SOURCE)
    assert contexts.height > d_sae / 4 and contexts["feature_id"].is_between(0, d_sae - 1).all()
    assert contexts["score"].is_null().all() and contexts["label"].str.len_chars().max() <= 120  # a snippet
    scores = named["score"].drop_nulls()
    assert scores.len() > d_sae / 4 and scores.is_between(0, 1).all()
    assert shown_labels(labels)["feature_id"].to_list() == list(range(d_sae))


def make_tiny_llama(out: Path, hidden: int, blocks: int, max_positions: int) -> Path:
    """A randomly initialised Llama with the SmolLM2 tokenizer, saved with save_pretrained into ``out``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from saeembed.reader.resolve import load_tokenizer

    torch.manual_seed(0)
    tok = load_tokenizer(None)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=blocks, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=max_positions,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-block Llama, hidden 32, for the encoding tests."""
    return make_tiny_llama(tmp_path_factory.mktemp("tiny_llama"), hidden=32, blocks=4, max_positions=256)


def make_random_sae(path: Path, d_in: int, d_sae: int, layer: int, model_name: str,
                    activation: str = "relu", k: int | None = None, seed: int = 0, bias: float = -0.05) -> Path:
    """A random SAE in SAELens layout, with encoder biases that make it fire sparsely.

    The tiny test Llama's block outputs have norms near 0.15, so a bias of -0.05 lets ≈1.5 % of
    (token, latent) pairs fire (≈2 latents per token): every document gets rows, not all latents.
    """
    from saeembed.sae.formats import save_saelens
    from saeembed.sae.model import SAEConfig, SparseAutoencoder

    torch.manual_seed(seed)
    sae = SparseAutoencoder(SAEConfig(d_in=d_in, d_sae=d_sae, activation=activation, k=k,
                                      model_name=model_name, hook_layer=layer))
    with torch.no_grad():
        sae.b_enc.fill_(bias)
    save_saelens(sae, path)
    return path


@pytest.fixture(scope="session")
def tiny_sae(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_random_sae(tmp_path_factory.mktemp("tiny_sae"), d_in=32, d_sae=128, layer=2,
                           model_name=str(tiny_llama))


@pytest.fixture(scope="session")
def topk_sae(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random TopK SAE on the tiny reader: every token fires k latents, so results have rows."""
    return make_random_sae(tmp_path_factory.mktemp("topk_sae"), d_in=32, d_sae=128, layer=2,
                           model_name=str(tiny_llama), activation="topk", k=8)


@pytest.fixture(scope="session")
def test_sae_spec() -> str:
    return os.environ.get("SAEEMBED_TEST_SAE", "default")


@pytest.fixture(scope="session")
def smollm2_reader(test_sae_spec: str):
    """The shipped SmolLM2 reader, cut at the test SAE's layer, loaded once per session."""
    from saeembed.reader import Reader
    from saeembed.sae import open_sae

    # one thread per core between the processes running tests (pytest-xdist's -n sets their number)
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))
    layer = open_sae(test_sae_spec).sae.cfg.hook_layer
    return Reader(None, layer=layer if layer is not None else 15)


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """The folder ``name``, filled by ``build`` once per test run, however many processes run the tests.

    Why: under pytest-xdist (``-n auto``) every worker is its own session; without this each would
    encode the shared corpora again. The first worker to get the lock builds; the others wait and reuse
    its folder. Callers copy what they may change, so workers never share a writable store.
    """
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, above every worker's own
    target = root / name
    with FileLock(f"{target}.lock"):
        if not (target / ".built").exists():
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            build(target)
            (target / ".built").touch()
    return target


@pytest.fixture(scope="session")
def real_store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, test_sae_spec: str) -> Path:
    """One store shared by the analysis tests, encoded with the shipped reader and SAE:

    - ``ge``: 400 GoEmotions validation comments from ``datasets/`` (``emo_*`` flags in ``meta``);
      always present, so the analyses are exercised on a clean clone.
    - ``amazon``: 400 Amazon reviews, 50 per domain × sentiment cell, truncated to 400 chars; only
      where ``../shared/datasets`` exists (tests that need it call ``needs_amazon``).

    Encoded once per run (:func:`built_once`); each process gets its own copy of the store.
    """
    def build(root: Path) -> None:
        from saeembed.encode import encode_corpus

        reader = request.getfixturevalue("smollm2_reader")
        pl.read_parquet(GOEMOTIONS_SAMPLE).head(400).write_parquet(root / "ge.parquet")
        names = ["ge"]
        amazon_path = SHARED / "amazon_multidomain_sentiment" / "data.parquet"
        if amazon_path.exists():
            amazon = (pl.read_parquet(amazon_path)
                      .group_by("domain", "sentiment", maintain_order=True).head(50)
                      .with_columns(pl.col("text").str.slice(0, 400))
                      .select("id", "domain", "sentiment", "text"))
            amazon.write_parquet(root / "amazon.parquet")
            names.append("amazon")
        for name in names:
            encode_corpus(root / "store.duckdb", root / f"{name}.parquet", name, sae=test_sae_spec, progress=False,
                          loaded_reader=reader)

    built = built_once(tmp_path_factory, f"real_store_{re.sub(r'[^A-Za-z0-9]+', '_', test_sae_spec)}", build)
    own = tmp_path_factory.mktemp("real_store")
    shutil.copytree(built, own, dirs_exist_ok=True)  # the store and the corpora it was encoded from
    return own / "store.duckdb"


def needs_amazon(store: Path) -> None:
    """Skip a test that needs the Amazon corpus where ../shared/datasets is absent."""
    shared_dataset("amazon_multidomain_sentiment")


@pytest.fixture(scope="session")
def faces_store(real_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of ``real_store`` with two more corpora cut out of ``ge`` (no encoding): ``pos`` (the
    positive-only comments) and ``neg`` (negative-only), for the reports' and browser's diff."""
    from tests.faces_support import NEGATIVE, POSITIVE, split_corpus

    dst = tmp_path_factory.mktemp("faces") / "store.duckdb"
    shutil.copy(real_store, dst)
    split_corpus(dst, "ge", "pos", POSITIVE)
    split_corpus(dst, "ge", "neg", NEGATIVE)
    return dst
