"""benchmarks/gpu_encode.py runs on CPU at a tiny shape and reports sane figures (the GPU run uses the same code)."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from tests.conftest import REPO


def _load():
    spec = importlib.util.spec_from_file_location("gpu_encode", REPO / "benchmarks" / "gpu_encode.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_encode_benchmark_on_cpu_tiny_shape(smollm2_reader, capsys):
    bench = _load()
    threads = torch.get_num_threads()
    try:
        res = bench.main(["--shape", "tiny", "--layer", "2", "--d-sae", "256", "--device", "cpu", "--docs", "40",
                          "--repeats", "1", "--threads", "1", "--json"])
    finally:
        torch.set_num_threads(threads)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == res
    assert res["device"] == "cpu" and res["dtype"] == "float32" and res["gpu"] is None and res["docs"] == 40
    assert res["params_truncated"] > 0 and res["gflop_per_token_matmul"] > 0
    # both exactness checks pass: the cached prefix and the packed rows reproduce the padded full forward
    assert res["prefix_cache_max_rel_error"] < 1e-4 and res["packed_max_rel_error"] < 1e-4
    v = res["variants"]
    assert set(v) == {"padded_prefix_cache", "padded_full", "packed_full"}
    content = {x["content_tokens"] for x in v.values()}
    assert len(content) == 1 and content.pop() > 40  # every variant pools the same tokens
    for name, x in v.items():
        assert x["bare_content_tok_s"] > 0 and x["model_tflop_s"] > 0
        assert x["mfu"] is None and x["peak_gpu_mem_gib"] is None  # no known peak and no GPU on CPU
        assert x["processed_tokens"] >= x["computed_tokens"] >= x["content_tokens"]
        if name != "packed_full":
            assert 0 < x["pipeline_over_bare"] <= 1.5
    # the cached prefix and skipped closing tokens cut the computed tokens (25 + 2 per short comment)
    assert v["padded_prefix_cache"]["computed_tokens"] < 0.6 * v["padded_full"]["computed_tokens"]
    assert v["packed_full"]["processed_tokens"] == v["packed_full"]["computed_tokens"]  # packing never pads
    assert res["prefix_cache_speedup"] > 0 and res["packed_over_padded_full"] > 0


def test_flop_counts_of_the_truncated_forward():
    bench = _load()
    from transformers import LlamaConfig

    cfg = LlamaConfig(**{**bench.SHAPES["llama-3.1-8b"], "num_hidden_layers": 20})
    # Llama-3.1-8B blocks: 218.1M matmul parameters each → 2 FLOPs per parameter per token
    assert bench.flops_per_token(cfg, 20) == pytest.approx(2 * 20 * 218_103_808)
    from saeembed.reader import Window

    w = Window(0, list(range(10)), [True] * 10, start=4, stop=8)  # tokens 4..7 attend to 5..8 keys
    assert bench.attention_flops([w], cfg, 1) == 4.0 * 4096 * (5 + 6 + 7 + 8)
