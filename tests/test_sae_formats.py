"""Every public SAE layout, written by the test in that exact layout and checked against the format's
own encoder math, written out here independently of ``SparseAutoencoder``.

Checkpoints are small (d_in=16, d_sae=64) random tensors; nothing of ours is mocked.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import save_file

from saeembed.errors import UserError
from saeembed.sae.formats import SAEFormatError, detect_layout, load_sae, save_saelens
from saeembed.sae.model import SAEShapeError
from saeembed.sae.resolve import open_sae, resolve_spec

D_IN, D_SAE = 16, 64
ID_RE = re.compile(r"^.+@[0-9a-f]{12}$")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def rnd(*shape: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape) * scale


def x_batch(n: int = 10, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(3, n, D_IN) * scale  # [batch, tokens, d_in]: encode must handle any leading dims


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def topk_after_relu(pre: torch.Tensor, k: int) -> torch.Tensor:
    """sparsify / lm_saes TopK: relu first, keep the k largest."""
    acts = torch.relu(pre)
    vals, idx = acts.topk(k, dim=-1)
    return torch.zeros_like(acts).scatter(-1, idx, vals)


def saelens_topk(pre: torch.Tensor, k: int) -> torch.Tensor:
    """SAELens TopK: k largest pre-activations, then relu on the kept values."""
    vals, idx = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))


# --------------------------------------------------------------------------------------------
# SAELens
# --------------------------------------------------------------------------------------------

def write_saelens(path: Path, cfg: dict, tensors: dict[str, torch.Tensor]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "cfg.json").write_text(json.dumps(cfg))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path / "sae_weights.safetensors"))
    return path


def saelens_tensors(threshold: bool = False) -> dict[str, torch.Tensor]:
    t = {"W_enc": rnd(D_IN, D_SAE), "W_dec": rnd(D_SAE, D_IN), "b_enc": rnd(D_SAE, scale=0.5),
         "b_dec": rnd(D_IN, scale=0.5)}
    if threshold:
        t["threshold"] = rnd(D_SAE, scale=0.5)  # some negative, to pin the relu in the reference
    return t


def test_saelens_old_keys_relu_and_topk(tmp_path: Path) -> None:
    t = saelens_tensors()
    old = {"d_in": D_IN, "d_sae": D_SAE, "activation_fn_str": "relu", "hook_point": "blocks.3.hook_resid_post",
           "hook_point_layer": 3, "model_name": "gpt2", "apply_b_dec_to_input": True,
           "normalize_activations": False, "dtype": "float32"}
    sae = load_sae(write_saelens(tmp_path / "relu", old, t))
    x = x_batch()
    close(sae.encode(x), torch.relu((x - t["b_dec"]) @ t["W_enc"] + t["b_enc"]))
    assert (sae.cfg.hook_layer, sae.cfg.model_name, sae.cfg.activation) == (3, "gpt2", "relu")

    topk = {**old, "activation_fn_str": "topk", "activation_fn_kwargs": {"k": 5}}
    sae = load_sae(write_saelens(tmp_path / "topk", topk, t))
    close(sae.encode(x), saelens_topk((x - t["b_dec"]) @ t["W_enc"] + t["b_enc"], 5))
    assert (sae.encode(x) > 0).sum(-1).max() <= 5


def test_saelens_v6_keys(tmp_path: Path) -> None:
    t = saelens_tensors(threshold=True)
    v6 = {"architecture": "jumprelu", "d_in": D_IN, "d_sae": D_SAE, "dtype": "float32", "device": "cpu",
          "apply_b_dec_to_input": False, "normalize_activations": "none", "reshape_activations": "none",
          "metadata": {"model_name": "gemma-2-2b", "hook_name": "blocks.12.hook_resid_post",
                       "sae_lens_version": "6.5.0"}}
    sae = load_sae(write_saelens(tmp_path / "jr", v6, t))
    x = x_batch()
    pre = x @ t["W_enc"] + t["b_enc"]
    close(sae.encode(x), torch.relu(pre) * (pre > t["threshold"]))
    assert (sae.cfg.hook_layer, sae.cfg.model_name) == (12, "gemma-2-2b")

    # 6.x TopK with rescale_acts_by_decoder_norm: rank pre·‖W_dec_i‖, activations carry the norm
    t2 = saelens_tensors()
    cfg = {**v6, "architecture": "topk", "k": 4, "apply_b_dec_to_input": True,
           "rescale_acts_by_decoder_norm": True}
    sae = load_sae(write_saelens(tmp_path / "tk", cfg, t2))
    pre = ((x - t2["b_dec"]) @ t2["W_enc"] + t2["b_enc"]) * t2["W_dec"].norm(dim=-1)
    acts = saelens_topk(pre, 4)
    close(sae.encode(x), acts)
    close(sae.decode(acts), (acts / t2["W_dec"].norm(dim=-1)) @ t2["W_dec"] + t2["b_dec"])

    sae = load_sae(write_saelens(tmp_path / "btk", {**v6, "architecture": "batchtopk", "k": 3}, t2))
    assert (sae.cfg.activation, sae.cfg.k) == ("batchtopk", 3)


def test_saelens_resid_pre_counts_block_outputs(tmp_path: Path) -> None:
    cfg = {"d_in": D_IN, "d_sae": D_SAE, "hook_name": "blocks.6.hook_resid_pre", "hook_layer": 6}
    assert load_sae(write_saelens(tmp_path / "a", cfg, saelens_tensors())).cfg.hook_layer == 5


def test_saelens_expected_average_only_in(tmp_path: Path) -> None:
    t = saelens_tensors()
    cfg = {"d_in": D_IN, "d_sae": D_SAE, "architecture": "standard", "apply_b_dec_to_input": True,
           "normalize_activations": "expected_average_only_in", "norm_scaling_factor": 0.37}
    sae = load_sae(write_saelens(tmp_path / "s", cfg, t))
    x = x_batch(scale=4.0)
    pre = (x * 0.37 - t["b_dec"]) @ t["W_enc"] + t["b_enc"]  # SAELens: scale, then subtract b_dec
    acts = torch.relu(pre)
    close(sae.encode(x), acts)
    close(sae.decode(acts), (acts @ t["W_dec"] + t["b_dec"]) / 0.37)

    del cfg["norm_scaling_factor"]
    with pytest.raises(SAEFormatError, match="norm_scaling_factor"):
        load_sae(write_saelens(tmp_path / "s2", cfg, t))


@pytest.mark.parametrize("patch, match", [
    ({"architecture": "gated"}, "gated SAEs are not supported"),
    ({"normalize_activations": "constant_norm_rescale"}, "constant_norm_rescale"),
    ({"normalize_activations": "layer_norm"}, "layer_norm"),
    ({"hook_name": "blocks.4.hook_mlp_out"}, "not the residual stream"),
    ({"hook_name": "blocks.4.attn.hook_z"}, "not the residual stream"),
    ({"architecture": "topk"}, "needs k"),
])
def test_saelens_refusals_are_clear(tmp_path: Path, patch: dict, match: str) -> None:
    cfg = {"d_in": D_IN, "d_sae": D_SAE, "hook_name": "blocks.4.hook_resid_post", **patch}
    path = write_saelens(tmp_path / "x", cfg, saelens_tensors())
    with pytest.raises(SAEFormatError, match=match):
        load_sae(path)
    with pytest.raises(UserError, match=match) as info:
        open_sae(str(path))
    assert "\n" not in str(info.value)


def test_saelens_wrong_shape_names_tensor(tmp_path: Path) -> None:
    t = saelens_tensors()
    t["b_enc"] = rnd(D_SAE + 1)
    path = write_saelens(tmp_path / "bad", {"d_in": D_IN, "d_sae": D_SAE}, t)
    with pytest.raises(SAEShapeError, match=r"tensor b_enc has shape \[65\]"):
        load_sae(path)
    with pytest.raises(UserError, match="b_enc"):
        open_sae(str(path))


def test_saelens_roundtrip_of_our_writer(tmp_path: Path) -> None:
    t = saelens_tensors()
    sae = load_sae(write_saelens(tmp_path / "a", {"d_in": D_IN, "d_sae": D_SAE,
                                                  "hook_name": "blocks.2.hook_resid_post"}, t))
    again = load_sae(save_saelens(sae, tmp_path / "b"))
    x = x_batch()
    close(again.encode(x), sae.encode(x))
    assert again.cfg.hook_layer == 2


# --------------------------------------------------------------------------------------------
# EleutherAI sparsify
# --------------------------------------------------------------------------------------------

def sparsify_tensors(d_in: int = D_IN, d_sae: int = D_SAE) -> dict[str, torch.Tensor]:
    return {"encoder.weight": rnd(d_sae, d_in), "encoder.bias": rnd(d_sae, scale=0.5),
            "W_dec": rnd(d_sae, d_in), "b_dec": rnd(d_in, scale=0.5)}


def write_sparsify(path: Path, cfg: dict, tensors: dict[str, torch.Tensor]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "cfg.json").write_text(json.dumps(cfg))
    save_file(tensors, str(path / "sae.safetensors"))
    return path


def sparsify_ref(x: torch.Tensor, t: dict[str, torch.Tensor], k: int) -> torch.Tensor:
    return topk_after_relu((x - t["b_dec"]) @ t["encoder.weight"].T + t["encoder.bias"], k)


def test_sparsify_root_and_hookpoint(tmp_path: Path) -> None:
    root = tmp_path / "sae-tiny-llama-8x"
    cfg = {"expansion_factor": 4, "normalize_decoder": True, "num_latents": D_SAE, "k": 6,
           "multi_topk": False, "skip_connection": False, "d_in": D_IN}
    (root).mkdir()
    (root / "config.json").write_text(json.dumps({"model": "tiny/llama", "hookpoints": ["layers.3", "layers.10"]}))
    t3, t10 = sparsify_tensors(), sparsify_tensors()
    write_sparsify(root / "layers.3", cfg, t3)
    write_sparsify(root / "layers.10", cfg, t10)

    x = x_batch()
    via_root = open_sae(f"{root}#layers.3")
    via_dir = open_sae(str(root / "layers.3"))
    close(via_root.sae.encode(x), sparsify_ref(x, t3, 6))
    close(open_sae(f"{root}#layers.10").sae.encode(x), sparsify_ref(x, t10, 6))
    assert via_root.sae_id == via_dir.sae_id and ID_RE.match(via_root.sae_id)
    assert via_root.sae_id.startswith("sae-tiny-llama-8x#layers.3@")
    c = via_root.sae.cfg
    assert (c.hook_layer, c.model_name, c.k, c.activation) == (3, "tiny/llama", 6, "topk")
    a = via_root.sae.encode(x)
    close(via_root.sae.decode(a), a @ t3["W_dec"] + t3["b_dec"])

    with pytest.raises(UserError, match=r"#layers\.3'"):  # root alone: say how to pick a hookpoint
        open_sae(str(root))
    with pytest.raises(UserError, match="no hookpoint 'layers.7'"):
        open_sae(f"{root}#layers.7")


def test_sparsify_d_in_from_tensors_and_errors(tmp_path: Path) -> None:
    t = sparsify_tensors()
    sae = load_sae(write_sparsify(tmp_path / "layers.0", {"k": 3, "expansion_factor": 4}, t))
    assert (sae.d_in, sae.d_sae) == (D_IN, D_SAE)
    x = x_batch()
    close(sae.encode(x), sparsify_ref(x, t, 3))

    bad = dict(t, W_dec=rnd(D_SAE, D_IN + 1))
    with pytest.raises(SAEShapeError, match=r"tensor W_dec has shape \[64, 17\]"):
        load_sae(write_sparsify(tmp_path / "bad" / "layers.0", {"k": 3, "d_in": D_IN, "num_latents": D_SAE}, bad))
    with pytest.raises(SAEFormatError, match="transcoder"):
        load_sae(write_sparsify(tmp_path / "tc" / "layers.0", {"k": 3, "d_in": D_IN, "transcode": True}, t))
    with pytest.raises(SAEFormatError, match="not the residual stream"):
        load_sae(write_sparsify(tmp_path / "mlp" / "layers.0.mlp", {"k": 3, "d_in": D_IN}, t))


# --------------------------------------------------------------------------------------------
# Goodfire
# --------------------------------------------------------------------------------------------

def goodfire_state(d_in: int = D_IN, d_sae: int = D_SAE) -> dict[str, torch.Tensor]:
    return {"encoder_linear.weight": rnd(d_sae, d_in), "encoder_linear.bias": rnd(d_sae, scale=0.5),
            "decoder_linear.weight": rnd(d_in, d_sae), "decoder_linear.bias": rnd(d_in, scale=0.5)}


def test_goodfire_pth(tmp_path: Path) -> None:
    st = goodfire_state()
    file = tmp_path / "Llama-3.1-8B-Instruct-SAE-l19.pth"
    torch.save(st, file)
    loaded = open_sae(str(file))
    sae, x = loaded.sae, x_batch()
    acts = torch.relu(x @ st["encoder_linear.weight"].T + st["encoder_linear.bias"])  # no b_dec subtraction
    close(sae.encode(x), acts)
    close(sae.decode(acts), acts @ st["decoder_linear.weight"].T + st["decoder_linear.bias"])
    assert (sae.cfg.model_name, sae.cfg.hook_layer) == ("meta-llama/Llama-3.1-8B-Instruct", 19)
    assert loaded.sae_id.startswith("Llama-3.1-8B-Instruct-SAE-l19@") and ID_RE.match(loaded.sae_id)
    assert open_sae(str(tmp_path)).sae_id == loaded.sae_id  # the directory holding one .pth works too


def test_goodfire_errors(tmp_path: Path) -> None:
    st = goodfire_state()
    st["decoder_linear.bias"] = rnd(D_IN + 2)
    torch.save(st, tmp_path / "bad.pth")
    with pytest.raises(UserError, match=r"decoder_linear\.bias has shape \[18\]"):
        open_sae(str(tmp_path / "bad.pth"))

    import argparse  # any non-tensor global: weights_only=True must refuse to unpickle it

    torch.save({"encoder_linear.weight": argparse.Namespace(a=1)}, tmp_path / "evil.pth")
    with pytest.raises(UserError, match="tensor-only"):  # weights_only=True refuses arbitrary pickles
        open_sae(str(tmp_path / "evil.pth"))
    torch.save({"foo": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="not a Goodfire SAE"):
        open_sae(str(tmp_path / "other.pth"))


# --------------------------------------------------------------------------------------------
# Gemma Scope
# --------------------------------------------------------------------------------------------

def gemma_params(d_in: int = D_IN, d_sae: int = D_SAE) -> dict[str, np.ndarray]:
    return {"W_enc": np.random.randn(d_in, d_sae).astype(np.float32),
            "W_dec": np.random.randn(d_sae, d_in).astype(np.float32),
            "b_enc": (np.random.randn(d_sae) * 0.5).astype(np.float32),
            "b_dec": (np.random.randn(d_in) * 0.5).astype(np.float32),
            "threshold": (np.random.rand(d_sae) * 0.8 + 0.05).astype(np.float32)}


def test_gemmascope_npz(tmp_path: Path) -> None:
    np.random.seed(0)
    p = gemma_params()
    d = tmp_path / "gemma-scope-2b-pt-res" / "layer_7" / "width_16k" / "average_l0_50"
    d.mkdir(parents=True)
    np.savez(d / "params.npz", **p)
    x = x_batch()
    t = {k: torch.from_numpy(v) for k, v in p.items()}
    pre = x @ t["W_enc"] + t["b_enc"]  # Gemma Scope: no b_dec subtraction on the input
    ref = (pre > t["threshold"]) * torch.relu(pre)
    for spec in (d, d / "params.npz"):
        loaded = open_sae(str(spec))
        close(loaded.sae.encode(x), ref)
    c = loaded.sae.cfg
    assert (c.activation, c.model_name, c.hook_layer) == ("jumprelu", "google/gemma-2-2b", 7)
    close(loaded.sae.decode(ref), ref @ t["W_dec"] + t["b_dec"])


def test_gemmascope_errors(tmp_path: Path) -> None:
    np.random.seed(1)
    p = gemma_params()
    p["threshold"] = p["threshold"][:-1]
    np.savez(tmp_path / "params.npz", **p)
    with pytest.raises(UserError, match=r"tensor threshold has shape \[63\]"):
        open_sae(str(tmp_path))
    mlp = tmp_path / "gemma-scope-2b-pt-mlp" / "layer_3" / "width_16k" / "average_l0_9"
    mlp.mkdir(parents=True)
    np.savez(mlp / "params.npz", **gemma_params())
    with pytest.raises(UserError, match="mlp site"):
        open_sae(str(mlp))


# --------------------------------------------------------------------------------------------
# Llama Scope
# --------------------------------------------------------------------------------------------

def write_llamascope(path: Path, hp: dict, tensors: dict[str, torch.Tensor]) -> Path:
    (path / "checkpoints").mkdir(parents=True, exist_ok=True)
    (path / "hyperparams.json").write_text(json.dumps(hp))
    save_file(tensors, str(path / "checkpoints" / "final.safetensors"))
    return path


def llamascope_tensors() -> dict[str, torch.Tensor]:
    return {"encoder.weight": rnd(D_SAE, D_IN), "encoder.bias": rnd(D_SAE, scale=0.5),
            "decoder.weight": rnd(D_IN, D_SAE), "decoder.bias": rnd(D_IN, scale=0.5)}


LS_HP = {"d_model": D_IN, "d_sae": D_SAE, "expansion_factor": 4, "act_fn": "jumprelu",
         "jump_relu_threshold": 0.4, "norm_activation": "dataset-wise",
         "dataset_average_activation_norm": {"in": 9.5, "out": 9.5},
         "hook_point_in": "blocks.5.hook_resid_post", "hook_point_out": "blocks.5.hook_resid_post",
         "use_decoder_bias": True, "apply_decoder_bias_to_pre_encoder": False,
         "sparsity_include_decoder_norm": True, "top_k": 50}


def test_llamascope_jumprelu_dataset_norm(tmp_path: Path) -> None:
    t = llamascope_tensors()
    path = write_llamascope(tmp_path / "Llama3_1-8B-Base-L5R-8x", LS_HP, t)
    loaded = open_sae(str(path))
    x = x_batch(scale=3.0)
    f_in = math.sqrt(D_IN) / 9.5  # lm_saes: dataset-wise input scaling to norm sqrt(d_model)
    pre = (x * f_in) @ t["encoder.weight"].T + t["encoder.bias"]
    acts = pre * (pre > 0.4)  # lm_saes JumpReLU: no relu, scalar threshold
    close(loaded.sae.encode(x), acts)
    close(loaded.sae.decode(acts), (acts @ t["decoder.weight"].T + t["decoder.bias"]) / (math.sqrt(D_IN) / 9.5))
    c = loaded.sae.cfg
    assert (c.hook_layer, c.model_name, c.activation) == (5, "meta-llama/Llama-3.1-8B", "jumprelu")
    assert loaded.sae_id.startswith("Llama3_1-8B-Base-L5R-8x@")
    # pointing at the weights file resolves to the checkpoint directory
    assert detect_layout(path / "checkpoints" / "final.safetensors") == ("llamascope", path)


def test_llamascope_topk_with_pre_encoder_bias_and_log_threshold(tmp_path: Path) -> None:
    t = llamascope_tensors()
    t["decoder.weight"] = t["decoder.weight"] / t["decoder.weight"].norm(dim=0, keepdim=True)  # unit columns
    hp = {**LS_HP, "act_fn": "topk", "top_k": 7, "apply_decoder_bias_to_pre_encoder": True,
          "dataset_average_activation_norm": {"in": 6.0, "out": 6.0}}
    sae = load_sae(write_llamascope(tmp_path / "tk", hp, t))
    x = x_batch(scale=2.0)
    xs = x * (math.sqrt(D_IN) / 6.0) - t["decoder.bias"]
    close(sae.encode(x), topk_after_relu(xs @ t["encoder.weight"].T + t["encoder.bias"], 7))

    t2 = llamascope_tensors()
    t2["log_jumprelu_threshold"] = rnd(D_SAE, scale=0.3) - 1.0
    hp2 = {**LS_HP, "norm_activation": "inference"}
    sae = load_sae(write_llamascope(tmp_path / "lt", hp2, t2))
    pre = x @ t2["encoder.weight"].T + t2["encoder.bias"]
    close(sae.encode(x), pre * (pre > t2["log_jumprelu_threshold"].exp()))


@pytest.mark.parametrize("patch, match", [
    ({"norm_activation": "token-wise"}, "token-wise"),
    ({"hook_point_out": "blocks.5.hook_mlp_out"}, "transcoder"),
    ({"act_fn": "topk", "top_k": 5}, "decoder norms are not 1"),
    ({"dataset_average_activation_norm": None}, "dataset_average_activation_norm.in is missing"),
    ({"hook_point_in": "blocks.5.hook_attn_out", "hook_point_out": "blocks.5.hook_attn_out"}, "residual"),
])
def test_llamascope_refusals(tmp_path: Path, patch: dict, match: str) -> None:
    path = write_llamascope(tmp_path / "x", {**LS_HP, **patch}, llamascope_tensors())
    with pytest.raises(UserError, match=match):
        open_sae(str(path))


def test_llamascope_wrong_shape_names_tensor(tmp_path: Path) -> None:
    t = llamascope_tensors()
    t["encoder.weight"] = rnd(D_SAE, D_IN + 1)
    with pytest.raises(UserError, match=r"encoder\.weight has shape \[64, 17\]"):
        open_sae(str(write_llamascope(tmp_path / "x", LS_HP, t)))


# --------------------------------------------------------------------------------------------
# resolution, identity, reader check
# --------------------------------------------------------------------------------------------

def test_reader_width_mismatch_is_refused(tmp_path: Path) -> None:
    path = write_saelens(tmp_path / "a", {"d_in": D_IN, "d_sae": D_SAE}, saelens_tensors())
    sae = open_sae(str(path)).sae
    sae.check_reader(D_IN)
    with pytest.raises(SAEShapeError, match="d_in=16 but tiny-reader has hidden size 32"):
        sae.check_reader(32, "tiny-reader")


def test_unknown_layout_and_missing_path(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"\0" * 8)
    with pytest.raises(UserError, match="no SAE checkpoint in a known layout.*SAELens.*Gemma Scope") as info:
        open_sae(str(tmp_path))
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="not an SAE checkpoint file"):
        open_sae(str(tmp_path / "weights.bin"))
    with pytest.raises(UserError, match="not found"):
        open_sae(str(tmp_path / "nope"))


def test_identity_covers_weights_not_labels(tmp_path: Path) -> None:
    t = saelens_tensors()
    path = write_saelens(tmp_path / "mysae", {"d_in": D_IN, "d_sae": D_SAE}, t)
    first = open_sae(str(path))
    assert ID_RE.match(first.sae_id) and first.sae_id.startswith("mysae@") and first.labels is None
    pl.DataFrame({"feature_id": [0], "label": ["x"]}).write_parquet(path / "labels.parquet")
    (path / "README.md").write_text("notes")
    second = open_sae(str(path))
    assert second.sae_id == first.sae_id and second.labels is not None
    t["b_enc"] = t["b_enc"] + 1e-3
    write_saelens(path, {"d_in": D_IN, "d_sae": D_SAE}, t)
    assert open_sae(str(path)).sae_id != first.sae_id


def test_hf_spec_offline_fails_fast(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(UserError, match="hub is unreachable.*local path|hub is unreachable.*LOCAL_PATH") as info:
        resolve_spec("hf:no-such-owner/no-such-sae-repo/layers.0", cache_dir=tmp_path / "hf")
    assert time.monotonic() - start < 5
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="hub is unreachable"):
        open_sae("hf:no-such-owner/no-such-sae-repo/layers.0")
    with pytest.raises(UserError, match="hf:OWNER/REPO/PATH"):
        open_sae("hf:justone")


def test_hf_spec_reads_the_local_cache_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A repo already in the HF cache loads offline, in the cache layout huggingface_hub writes."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "hf"
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = cache / "models--acme--sae-tiny"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(sha)
    t = sparsify_tensors()
    write_sparsify(repo_dir / "snapshots" / sha / "layers.2", {"k": 4, "d_in": D_IN, "num_latents": D_SAE}, t)
    resolved = resolve_spec("hf:acme/sae-tiny/layers.2", cache_dir=cache)
    assert resolved.name == "acme/sae-tiny/layers.2"
    sae = load_sae(resolved.path)
    x = x_batch()
    close(sae.encode(x), sparsify_ref(x, t, 4))
    assert resolve_spec("hf:acme/sae-tiny#layers.2", cache_dir=cache).path == resolved.path
    with pytest.raises(UserError, match="'layers.9' is not in acme/sae-tiny|not in the local cache"):
        resolve_spec("hf:acme/sae-tiny/layers.9", cache_dir=cache)


def test_saelens_spec_needs_sae_lens_or_says_so() -> None:
    try:
        import sae_lens  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match="pip install sae-lens"):
            open_sae("saelens:gemma-scope-2b-pt-res-canonical/layer_20/width_16k/canonical")
    else:  # registry present: an unknown release must still be a clear one-line error
        with pytest.raises(UserError, match="no release"):
            open_sae("saelens:no-such-release/x")
    with pytest.raises(UserError, match="saelens:RELEASE/SAE_ID"):
        open_sae("saelens:only-a-release")


def test_default_spec_when_installed() -> None:
    from saeembed.sae.resolve import DEFAULT_SAE_DIR

    if not (DEFAULT_SAE_DIR / "cfg.json").exists():
        with pytest.raises(UserError, match="default SAE is not installed"):
            open_sae("default")
        return
    loaded = open_sae("default")
    assert loaded.sae_id.startswith("default@") and ID_RE.match(loaded.sae_id)
    assert os.path.samefile(loaded.path, DEFAULT_SAE_DIR)
