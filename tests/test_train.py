"""SAE training: activation cache, TopK + AuxK trainer, offline labels, CLI, and the shipped default.

Everything runs on a tiny randomly initialised Llama (hidden 64, 2 blocks) with the real SmolLM2
tokenizer over real GoEmotions comments, so the whole file takes seconds on a CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from saeembed.errors import UserError
from saeembed.train import (
    ActivationCache,
    CorpusSpec,
    TrainConfig,
    cache_activations,
    evaluate_sae,
    parse_corpus_spec,
    save_trained_sae,
    train_topk_sae,
)
from tests.conftest import GOEMOTIONS_SAMPLE, check_shipped_labels, make_tiny_llama


@pytest.fixture(scope="module")
def llama64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("llama64"), hidden=64, blocks=2, max_positions=512)


@pytest.fixture(scope="module")
def reader64(llama64: Path):
    from saeembed.reader import Reader

    return Reader(str(llama64), layer=1, device="cpu")


@pytest.fixture(scope="module")
def corpus() -> CorpusSpec:
    return CorpusSpec(str(GOEMOTIONS_SAMPLE), "text", max_docs=400, max_chars=300)


@pytest.fixture(scope="module")
def cache64(reader64, corpus: CorpusSpec, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cache64")
    cache_activations([corpus], d, reader=reader64, chunk_docs=64, progress=None)
    return d


def _arrays(d: Path) -> list[dict[str, np.ndarray]]:
    c = ActivationCache(d)
    return [c.load(i) for i in range(len(c.paths))]


def test_cache_holds_content_tokens_and_resumes_identically(reader64, corpus, cache64: Path) -> None:
    man = json.loads((cache64 / "manifest.json").read_text())
    assert man["complete"] and man["layer"] == 1 and man["hidden_size"] == 64
    assert man["corpora"][0]["path"] == corpus.path
    before = _arrays(cache64)
    assert len(before) >= 3
    first = before[0]
    assert first["acts"].dtype == np.float16 and first["acts"].shape[1] == 64
    # pooled tokens only: no template/special tokens, positions count up per document
    assert not set(first["tok"].tolist()) & set(reader64.special_ids)
    assert first["pos"][0] == 0 and (np.diff(first["doc"]) >= 0).all()
    victim = sorted(cache64.glob("chunk_*.safetensors"))[1]
    mtimes = {p: p.stat().st_mtime_ns for p in cache64.glob("chunk_*.safetensors") if p != victim}
    victim.unlink()
    man2 = cache_activations([corpus], cache64, reader=reader64, chunk_docs=64, progress=None)
    assert man2["n_tokens"] == man["n_tokens"]
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items()), "existing chunks must be skipped"
    after = _arrays(cache64)
    for a, b in zip(before, after, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    assert not list(cache64.glob(".*tmp*"))


def test_cache_refuses_other_settings(reader64, corpus, cache64: Path) -> None:
    with pytest.raises(UserError, match="different settings"):
        cache_activations([corpus], cache64, reader=reader64, chunk_docs=32, progress=None)


def test_bf16_cache_is_its_own_setting_and_close_to_fp32(llama64: Path, corpus, cache64: Path,
                                                          tmp_path: Path) -> None:
    """A bf16 reader caches (the fast CPU path) activations within bf16 rounding of fp32, and a cache
    made in one dtype is never resumed in the other."""
    with pytest.raises(UserError, match="dtype"):
        cache_activations([corpus], cache64, reader=str(llama64), layer=1, device="cpu", dtype="bf16",
                          chunk_docs=64, progress=None)
    man = cache_activations([corpus], tmp_path, reader=str(llama64), layer=1, device="cpu", dtype="bf16",
                            chunk_docs=64, max_tokens=10, progress=None)
    assert man["dtype"] == "bfloat16"
    a, b = _arrays(cache64)[0]["acts"].astype(np.float32), _arrays(tmp_path)[0]["acts"].astype(np.float32)
    assert a.shape == b.shape and np.array_equal(_arrays(cache64)[0]["tok"], _arrays(tmp_path)[0]["tok"])
    rel = np.linalg.norm(a - b, axis=1) / np.linalg.norm(a, axis=1)
    assert 0 < float(np.median(rel)) < 0.05


def test_step_loss_is_the_models_own_reconstruction_error() -> None:
    """The trainer's gathered TopK forward equals the SAE's encode → decode, and its gradient reaches
    every parameter (the decoder only through the selected latents)."""
    from saeembed.sae.model import SAEConfig, SparseAutoencoder
    from saeembed.train.topk import _step_loss

    torch.manual_seed(0)
    sae = SparseAutoencoder(SAEConfig(d_in=32, d_sae=128, activation="topk", k=4, apply_b_dec_to_input=True))
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.1)
    x = torch.randn(64, 32)
    dead = torch.zeros(128, dtype=torch.bool)
    loss, fvu, _, fired = _step_loss(sae, x, 4, 0, dead, 0.0)
    with torch.no_grad():
        ref = ((sae(x) - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    assert abs(fvu - float(ref)) < 1e-5 and abs(float(loss.detach()) - float(ref)) < 1e-5
    loss.backward()
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in sae.parameters())
    unused = np.setdiff1d(np.arange(128), fired.numpy())
    assert float(sae.W_dec.grad[unused].abs().sum()) == 0.0


def test_max_tokens_stops_early(reader64, corpus, tmp_path: Path) -> None:
    man = cache_activations([corpus], tmp_path, reader=reader64, chunk_docs=64, max_tokens=10, progress=None)
    assert man["n_chunks"] == 1 and len(ActivationCache(tmp_path).paths) == 1


def test_corpus_spec_syntax(corpus) -> None:
    assert parse_corpus_spec(f"{corpus.path}:title") == CorpusSpec(corpus.path, "title")
    assert parse_corpus_spec(corpus.path, "text") == CorpusSpec(corpus.path, "text")


@pytest.mark.slow  # a subprocess or a training run: minutes on a loaded 2-core machine
def test_topk_training_lowers_fvu_and_saves(cache64: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(d_sae=256, k=8, steps=150, batch_size=256, lr=3e-3, heldout_frac=0.1, log_every=50,
                      dead_tokens=5000, seed=0)
    sae, m = train_topk_sae(cache64, cfg, progress=None)
    untrained, _ = train_topk_sae(cache64, TrainConfig(d_sae=256, k=8, steps=1, batch_size=256, lr=1e-9,
                                                       heldout_frac=0.1, seed=0), progress=None)
    h = m["heldout"]
    assert h["n_tokens"] > 100
    base = evaluate_sae(untrained, _heldout(cache64, 0.1))["fvu"]
    assert h["fvu"] < 0.35 and h["fvu"] < 0.5 * base, (h, base)
    assert 0 < h["l0"] <= 8
    assert m["log"][-1]["train_fvu"] < m["log"][0]["train_fvu"]
    # decoder rows unit norm; saved checkpoint reads raw activations and reproduces the metrics
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(256), atol=1e-4)
    from saeembed.sae.formats import load_saelens

    save_trained_sae(sae, tmp_path / "sae", dtype=torch.float32)
    back = load_saelens(tmp_path / "sae")
    assert back.cfg.hook_layer == 1 and back.cfg.hook_name == "blocks.1.hook_resid_post"
    assert back.cfg.activation == "topk" and back.cfg.k == 8
    assert back.cfg.extra["saeembed"]["metrics"]["heldout"]["fvu"] == pytest.approx(h["fvu"])
    assert evaluate_sae(back, _heldout(cache64, 0.1))["fvu"] == pytest.approx(h["fvu"], rel=1e-3)


def _heldout(d: Path, frac: float) -> torch.Tensor:
    from saeembed.train import heldout_mask

    parts = [c["acts"][heldout_mask(c["doc"], frac)] for c in _arrays(d)]
    return torch.from_numpy(np.concatenate(parts))


def test_auxk_trains_dead_latents_only_with_auxk(cache64: Path) -> None:
    """Without AuxK a dead TopK latent gets no gradient at all (it is never selected), so it can
    never come back; the AuxK term is what sends it a training signal (towards the residual)."""
    from saeembed.sae.model import SAEConfig, SparseAutoencoder
    from saeembed.train import _step_loss

    torch.manual_seed(0)
    x = torch.from_numpy(_arrays(cache64)[0]["acts"][:64]).float()
    x = x * (64 / (x ** 2).sum(1).mean()).sqrt()
    sae = SparseAutoencoder(SAEConfig(d_in=64, d_sae=256, activation="topk", k=4))
    dead = torch.zeros(256, dtype=torch.bool)
    dead[128:] = True
    grads = {}
    for coef in (1 / 32, 0.0):
        sae.zero_grad(set_to_none=True)
        loss, fvu, aux, fired = _step_loss(sae, x, 4, 32 if coef else 0, dead, coef)
        loss.backward()
        grads[coef] = (sae.W_enc.grad[:, dead].abs().sum(0), sae.W_dec.grad[dead].abs().sum(1), aux)
    g_enc, g_dec, aux = grads[1 / 32]
    n_enc, n_dec, aux0 = grads[0.0]
    never_selected = torch.ones(256, dtype=torch.bool)
    never_selected[fired] = False
    quiet = never_selected[dead]  # dead latents the main TopK did not pick in this batch
    assert quiet.sum() > 40
    assert (n_enc[quiet] == 0).all() and (n_dec[quiet] == 0).all()
    assert aux > 0 and aux0 == 0.0
    assert (g_dec[quiet] > 0).float().mean() > 0.2 and (g_enc[quiet] > 0).float().mean() > 0.2


def test_cli_train_sae_with_labels(llama64: Path, corpus, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from saeembed.cli import main
    from saeembed.sae import open_sae

    out = tmp_path / "sae"
    res = CliRunner().invoke(main, [
        "train-sae", "--corpus", f"{corpus.path}:text", "--reader", str(llama64), "--layer", "1",
        "--max-docs", "120", "--max-chars", "200", "--out", str(out), "--d-sae", "128", "--k", "4",
        "--steps", "30", "--batch-size", "128", "--device", "cpu", "--format", "json"])
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout.strip().splitlines()[-1])
    assert row["layer"] == 1 and row["tokens"] > 0 and 0 <= row["heldout_fvu"] < 2
    loaded = open_sae(str(out))
    labels = loaded.labels
    assert labels is not None and labels["feature_id"].to_list() == list(range(128))
    assert set(labels["label_source"]) == {"offline-ctfidf"}
    live = labels.filter(pl.col("label") != "(dead)")
    assert live.height > 0 and (live["density"] > 0).all() and live["description"].str.contains("⟦").all()


def test_cli_rejects_missing_corpus(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from saeembed.cli import main

    res = CliRunner().invoke(main, ["train-sae", "--corpus", str(tmp_path / "nope.parquet"), "--out", str(tmp_path)])
    assert res.exit_code == 2 and "not found" in res.output


def test_shipped_default_sae_loads_with_a_scored_label_for_every_latent() -> None:
    from saeembed.sae import open_sae

    loaded = open_sae("default")
    sae = loaded.sae
    assert sae.cfg.d_in == 576 and sae.cfg.activation == "topk"
    assert sae.cfg.model_name == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert sae.cfg.hook_name == f"blocks.{sae.cfg.hook_layer}.hook_resid_post"
    meta = sae.cfg.extra["saeembed"]
    assert meta["metrics"]["heldout"]["fvu"] < 0.5
    assert loaded.labels is not None
    check_shipped_labels(loaded.labels, sae.cfg.d_sae)
    weights = loaded.path / "sae_weights.safetensors"
    assert weights.stat().st_size <= 20 * 2 ** 20
