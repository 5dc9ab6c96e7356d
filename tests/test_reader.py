"""Reader: hook point, truncation, template masking and windowing on real (tiny and shipped) models."""

from __future__ import annotations

import torch

from saeembed.reader import Reader, pad_batch
from saeembed.sae.formats import load_sae
from saeembed.encode import pool_windows


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

    from saeembed.encode import _tokenise_shard, encode_shard
    from saeembed.corpus import Corpus
    import polars as pl

    corpus = Corpus("mem", pl.DataFrame({"row_idx": [0], "text": [doc], "meta": [None]},
                                        schema={"row_idx": pl.Int64, "text": pl.String, "meta": pl.String}),
                    "text", "x")
    rows = encode_shard(reader, sae, _tokenise_shard(reader, corpus, 0, 1, batch_tokens=4096))
    got = torch.zeros(sae.d_sae)
    got[torch.as_tensor(rows["feature_id"].to_numpy(), dtype=torch.long)] = torch.as_tensor(rows["value"].to_numpy())
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

    from saeembed.embed import _wheel_model_dir

    tok = AutoTokenizer.from_pretrained(_wheel_model_dir())
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
