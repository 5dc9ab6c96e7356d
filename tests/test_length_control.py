"""diff at equal document length: the statistics, the strata kept at ingest, pairing that is never
blind, near-ubiquitous latents, and what every output says about the corpora.

Most tests run on a store encoded by the tiny random reader and SAE (fast): ``short`` (120 GoEmotions
comments), ``joined`` (120 documents, each two other comments joined: only longer), ``half`` (60
comments) and ``short_again`` (the ``short`` texts once more, with a ``pair`` id in reverse order).
One slow test repeats the null on real text with the shipped reader.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

import saeembed
from saeembed.analysis import diff
from saeembed.analysis.common import corpus_info
from saeembed.analysis.diff import two_proportion_test
from saeembed.analysis.length import logistic_length, mantel_haenszel, paired_length
from saeembed.cli import main
from saeembed.errors import UserError
from saeembed.strata import STRATA_TABLES, corpus_lengths, stratum_of
from tests.conftest import GOEMOTIONS_SAMPLE


def cli(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, list(args))
    return res.exit_code, res.stdout, res.stderr


def _joined(texts: list[str]) -> list[str]:
    return [texts[2 * i] + " " + texts[2 * i + 1] for i in range(len(texts) // 2)]


def _sae_with_constant_latents(path: Path, model_name: str) -> Path:
    """A random TopK SAE whose latents 0 and 1 fire on every token (near-ubiquitous in any corpus)."""
    import torch

    from saeembed.sae.formats import save_saelens
    from saeembed.sae.model import SAEConfig, SparseAutoencoder

    torch.manual_seed(0)
    sae = SparseAutoencoder(SAEConfig(d_in=32, d_sae=128, activation="topk", k=4, model_name=model_name,
                                      hook_layer=2))
    with torch.no_grad():
        sae.b_enc.fill_(-0.05)
        sae.b_enc[:2] = 10.0
    return save_saelens(sae, path)


@pytest.fixture(scope="module")
def tiny(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("length")
    sae = _sae_with_constant_latents(root / "sae", str(tiny_llama))
    texts = pl.read_parquet(GOEMOTIONS_SAMPLE)["text"].to_list()
    frames = {"short": pl.DataFrame({"text": texts[:120], "pair": list(range(120))}),
              "joined": pl.DataFrame({"text": _joined(texts[120:360])}),
              "half": pl.DataFrame({"text": texts[360:420]}),
              "short_again": pl.DataFrame({"text": texts[:120][::-1], "pair": list(range(120))[::-1]})}
    store = root / "s.duckdb"
    for name, frame in frames.items():
        frame.write_parquet(root / f"{name}.parquet")
        code, _, err = cli("encode", str(root / f"{name}.parquet"), "--store", str(store), "--name", name,
                           "--reader", str(tiny_llama), "--sae", str(sae), "--quiet")
        assert code == 0, err
    return store


# ----------------------------------------------------------------------------- the statistics --
def test_mantel_haenszel_with_one_stratum_is_the_yates_test_times_n_minus_1_over_n() -> None:
    from scipy.stats import chi2_contingency

    k1, n1, k2, n2 = np.array([[30]]), np.array([80]), np.array([[12]]), np.array([400])  # [strata, latents]
    res = mantel_haenszel(k1, n1, k2, n2)
    chi2, _, _, _ = chi2_contingency([[30, 50], [12, 388]], correction=True)
    assert res.z[0] ** 2 == pytest.approx(chi2 * (480 - 1) / 480, rel=1e-9)
    assert res.diff[0] == pytest.approx(30 / 80 - 12 / 400)


def test_mantel_haenszel_sees_no_difference_that_length_explains() -> None:
    # presence depends on the stratum only; A sits mostly in the long strata, B in the short ones
    rate = np.array([0.1, 0.3, 0.6, 0.9])
    na, nb = np.array([20, 40, 200, 400]), np.array([400, 200, 40, 20])
    ka, kb = (rate * na)[:, None].round(), (rate * nb)[:, None].round()
    res = mantel_haenszel(ka, na, kb, nb)
    raw = ka.sum() / na.sum() - kb.sum() / nb.sum()
    assert raw > 0.4 and res.diff[0] == pytest.approx(0.0, abs=1e-12) and res.p[0] == pytest.approx(1.0)
    # a real difference inside every stratum is kept: the pooled risk difference of the strata
    ka2 = ka + (0.08 * na)[:, None].round()
    res2 = mantel_haenszel(ka2, na, kb, nb)
    assert res2.diff[0] == pytest.approx(0.08, abs=0.005) and res2.p[0] < 0.05 and res2.z[0] > 0
    # strata only one corpus occupies carry nothing
    alone = mantel_haenszel(np.array([[5], [9]]), np.array([10, 10]), np.array([[0], [1]]), np.array([0, 10]))
    assert alone.diff[0] == pytest.approx(0.8)


def test_logistic_length_fit_matches_a_direct_maximum_likelihood_fit() -> None:
    from scipy.optimize import minimize
    from scipy.special import expit

    rng = np.random.default_rng(1)
    xa, xb = np.log([10, 20, 40, 80]), np.log([12, 24, 48, 96])
    na, nb = np.array([50, 80, 60, 20]), np.array([20, 60, 80, 50])
    ka = rng.binomial(na, expit(-3 + 0.8 * xa + 0.4))[:, None]
    kb = rng.binomial(nb, expit(-3 + 0.8 * xb))[:, None]
    res = logistic_length(ka, na, xa, kb, nb, xb)
    x = np.concatenate([xa, xb]) - np.average(np.concatenate([xa, xb]), weights=np.concatenate([na, nb]))
    a = np.r_[np.ones(4), np.zeros(4)]
    k, n = np.concatenate([ka[:, 0], kb[:, 0]]), np.concatenate([na, nb])

    def nll(beta: np.ndarray) -> float:
        eta = beta[0] + beta[1] * x + beta[2] * a
        return float(-(k * eta - n * np.logaddexp(0, eta)).sum())

    beta = minimize(nll, np.zeros(3), method="BFGS", options={"gtol": 1e-10}).x
    eta = beta[0] + beta[1] * x
    standardised = ((expit(eta + beta[2]) - expit(eta)) * n / n.sum()).sum()
    assert res.diff[0] == pytest.approx(standardised, abs=1e-4)
    assert np.sign(res.z[0]) == np.sign(beta[2]) and 0 <= res.p[0] <= 1


def test_paired_length_at_equal_length_is_the_sign_test_and_sees_through_a_length_ratio() -> None:
    # every pair of equal length: the score test of b = 0 is the normal approximation of McNemar
    res = paired_length(np.array([[30]]), np.array([[10]]), np.array([0.0]), 100)
    assert res.z[0] == pytest.approx((30 - 20) / np.sqrt(40 / 4)) and res.diff[0] == pytest.approx(0.2, abs=1e-4)
    # the side with the longer document has the latent more often, by as much as its length predicts,
    # and at equal length the two sides are even: nothing left to report
    delta = np.array([-0.5, 0.0, 0.5, 1.0])
    n = np.array([100, 100, 100, 100])
    only_a = np.round(n / (1 + np.exp(-2 * delta)))
    res = paired_length(only_a[:, None], (n - only_a)[:, None], delta, 1000)
    assert abs(res.z[0]) < 0.5 and abs(res.diff[0]) < 0.01
    swapped = paired_length((n - only_a)[:, None], only_a[:, None], -delta, 1000)
    assert swapped.z[0] == pytest.approx(-res.z[0], abs=1e-6)


# -------------------------------------------------------------------- strata kept at ingest --
def test_strata_kept_at_ingest_equal_a_count_from_the_documents(tiny: Path) -> None:
    st = saeembed.open_store(tiny)
    with st.reading():
        info = corpus_info(st, "joined")
        kept = corpus_lengths(st, info)
    x, _ = st.embeddings("joined")
    tokens = st.documents("joined")["n_tokens"].to_numpy()
    strata = stratum_of(tokens)
    assert kept.n_docs == 120 and kept.mean_tokens == pytest.approx(tokens.mean())
    assert kept.median_tokens == pytest.approx(np.median(tokens))
    assert np.array_equal(kept.strata, np.unique(strata))
    assert np.array_equal(kept.docs, [int((strata == s).sum()) for s in kept.strata])
    present = kept.present(128, int(kept.strata[0]), int(kept.strata[-1] - kept.strata[0] + 1))
    b = (x > 0).toarray()
    for s in kept.strata:
        assert np.array_equal(present[s - kept.strata[0]], b[strata == s].sum(axis=0))
    # 4 strata per doubling of length: 108 and 127 tokens share one, 107 and 128 do not
    assert stratum_of(np.array([107, 108, 127, 128, 1, 0])).tolist() == [26, 27, 27, 28, 0, 0]


def _old_store(src: Path, dst: Path) -> Path:
    """A copy of the store as a saeembed from before the length strata left it."""
    shutil.copy(src, dst)
    con = duckdb.connect(str(dst))
    for table in STRATA_TABLES:
        con.execute(f"DROP TABLE {table}")
    con.close()
    return dst


def test_an_old_store_gets_its_strata_on_first_use_and_keeps_them(tiny: Path, tmp_path: Path) -> None:
    old = _old_store(tiny, tmp_path / "old.duckdb")
    expected = diff(tiny, ["joined", "short"], fdr=1, min_diff=0.0, examples=2)
    assert expected["test"].unique().to_list() == ["logistic"]
    assert diff(old, ["joined", "short"], fdr=1, min_diff=0.0, examples=2).equals(expected)
    con = duckdb.connect(str(old), read_only=True)
    assert con.execute("SELECT count(*) FROM corpus_lengths").fetchall()[0][0] == 2  # kept for next time
    assert con.execute("SELECT count(DISTINCT corpus_id) FROM latent_strata").fetchall()[0][0] == 2
    con.close()
    assert diff(old, ["joined", "short"], fdr=1, min_diff=0.0, examples=2).equals(expected)


# ------------------------------------------------------------------------------ the control --
def test_length_control_removes_what_only_length_explains(tiny: Path) -> None:
    raw = diff(tiny, ["joined", "short"], target="joined", control="none", min_diff=0.0, top=None, examples=0,
               keep_ubiquitous=True)
    tested = diff(tiny, ["joined", "short"], target="joined", fdr=None, min_diff=-2.0, top=None, examples=0,
                  keep_ubiquitous=True).height
    controlled = diff(tiny, ["joined", "short"], target="joined", min_diff=0.0, top=None, examples=0,
                      keep_ubiquitous=True)
    assert raw.height >= 10 * max(controlled.height, 1)  # joined documents have more of most latents ...
    assert controlled.height <= 0.01 * tested + 1  # ... and at equal length next to none is left
    assert (controlled["control"] == "length").all() and (raw["control"] == "none").all()


def _old_diff(st: saeembed.Store, a: str, b: str, min_diff: float, fdr: float) -> pl.DataFrame:
    """diff as it was before length control: z-test on the frequencies, BH, diff >= min_diff, q <= fdr,
    ranked by difference, then p, then latent id."""
    from saeembed.analysis.common import bh_qvalues

    counts = {c: np.asarray((st.embeddings(c)[0] > 0).sum(axis=0)).ravel() for c in (a, b)}
    n = {c: st.corpus(c)["n_docs"] for c in (a, b)}
    tested = np.flatnonzero(counts[a] + counts[b] > 0)
    _, p = two_proportion_test(counts[a][tested], n[a], counts[b][tested], n[b])
    d = counts[a][tested] / n[a] - counts[b][tested] / n[b]
    q = bh_qvalues(p)
    keep = (d >= min_diff) & (q <= fdr)
    return pl.DataFrame({"feature_id": tested[keep].astype(np.int32), "diff": d[keep], "p_value": p[keep],
                         "q_value": q[keep]}).sort(["diff", "p_value", "feature_id"], descending=[True, False, False])


def test_control_none_gives_the_plain_diff_row_for_row(tiny: Path) -> None:
    st = saeembed.open_store(tiny)
    res = diff(st, ["joined", "short"], target="joined", control="none", keep_ubiquitous=True, top=None, examples=0)
    old = _old_diff(st, "joined", "short", 0.03, 0.05)
    assert res.height == old.height > 10
    assert res["feature_id"].to_list() == old["feature_id"].to_list()
    assert np.allclose(res["q_value"].to_numpy(), old["q_value"].to_numpy(), rtol=1e-12, atol=0)
    assert (res["adj_diff"] == res["diff"]).all() and (res["test"] == "z").all()
    assert np.allclose(res["diff"].to_numpy(), old["diff"].to_numpy(), rtol=0, atol=1e-15)


def test_near_ubiquitous_latents_are_flagged_and_left_out_unless_asked_for(tiny: Path) -> None:
    st = saeembed.open_store(tiny)
    share = {c: np.asarray((st.embeddings(c)[0] > 0).mean(axis=0)).ravel() for c in ("joined", "short")}
    ubiquitous = set(np.flatnonzero((share["joined"] >= 0.95) & (share["short"] >= 0.95)).tolist())
    assert ubiquitous == {0, 1}
    every = diff(st, ["joined", "short"], control="none", fdr=None, min_diff=-2.0, top=None, examples=0,
                 keep_ubiquitous=True)
    flagged = set(every.filter(pl.col("ubiquitous"))["feature_id"].to_list())
    assert flagged == ubiquitous
    default = diff(st, ["joined", "short"], control="none", fdr=None, min_diff=-2.0, top=None, examples=0)
    assert not default["ubiquitous"].any() and default.height == every.height - 2 * len(ubiquitous)


# ---------------------------------------------------------------------------------- pairing --
def test_pairing_by_position_refuses_corpora_of_different_sizes(tiny: Path) -> None:
    with pytest.raises(UserError, match="120 documents and 'half' 60: 60 rows would be paired and 60 left"):
        diff(tiny, ["short", "half"], paired=True)
    code, out, err = cli("diff", "--store", str(tiny), "short", "half", "--paired")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "--pair-key" in err
    assert err.startswith("error: ")


def test_paired_outputs_carry_the_discordant_counts(tiny: Path) -> None:
    st = saeembed.open_store(tiny)
    a = (st.embeddings("short")[0] > 0).toarray()
    b = (st.embeddings("short_again")[0] > 0).toarray()[::-1]  # row i of short_again is row 119 - i of short
    for control in ("none", "length"):
        res = diff(st, ["short", "short_again"], paired=True, pair_key="pair", control=control, fdr=None,
                   min_diff=-2.0, top=None, examples=0, keep_ubiquitous=True)
        # the same texts on both sides: every pair is concordant, nothing differs
        assert res.height > 0 and (res["only_target"] == 0).all() and (res["only_other"] == 0).all()
        f = res.row(0, named=True)["feature_id"]
        assert res.row(0, named=True)["both"] == int((a[:, f] & b[:, f]).sum())
        assert (res["p_value"] == 1.0).all()
    joined = diff(st, ["short", "joined"], paired=True, fdr=None, min_diff=-2.0, top=None, examples=0,
                  keep_ubiquitous=True)  # same size: pairing by position is the user's call
    x, y = (st.embeddings("short")[0] > 0).toarray(), (st.embeddings("joined")[0] > 0).toarray()
    for r in joined.head(20).iter_rows(named=True):
        f = r["feature_id"]
        t, o = (x, y) if r["target"] == "short" else (y, x)
        assert (r["both"], r["only_target"], r["only_other"]) == (
            int((t[:, f] & o[:, f]).sum()), int((t[:, f] & ~o[:, f]).sum()), int((~t[:, f] & o[:, f]).sum()))
    assert joined["test"].unique().to_list() == ["paired-logistic"]


# --------------------------------------------------------------------------------- outputs --
def test_every_output_states_the_corpora_their_lengths_and_the_control(tiny: Path, tmp_path: Path) -> None:
    s = ["--store", str(tiny)]
    code, out, err = cli("diff", *s, "joined", "short")
    assert code == 0
    lines = err.splitlines()
    assert any(line.startswith("joined: 120 documents, content tokens per document mean") for line in lines)
    assert any(line.startswith("short: 120 documents") for line in lines)
    assert sum(line.startswith("warning: mean lengths differ") for line in lines) == 1
    assert any(line.startswith("controlled for document length") for line in lines)
    assert "warning" not in out  # stdout holds only the table
    code, out, err = cli("diff", *s, "short", "short_again", "--control", "none")
    assert code == 0 and "warning" not in err and "controlled for nothing" in err
    code, out, _ = cli("diff", *s, "joined", "short", "--format", "json", "--fdr", "1", "--min-diff", "0")
    rows = json.loads(out)
    st = saeembed.open_store(tiny)
    tokens = st.documents("joined")["n_tokens"].to_numpy()
    assert rows and {r["control"] for r in rows} == {"length"}
    r = next(r for r in rows if r["target"] == "joined")
    assert r["mean_tokens_target"] == pytest.approx(tokens.mean())
    assert r["median_tokens_target"] == pytest.approx(np.median(tokens))
    code, out, err = cli("diff", *s, "short", "joined", "--paired", "--fdr", "1", "--min-diff", "0")
    assert code == 0 and "paired 120 documents by row position; without a partner: short 0, joined 0" in err
    assert out.splitlines()[0].split()[-4:] == ["both", "only_target", "only_other", "example"]
    html = tmp_path / "d.html"
    code, _, err = cli("diff", *s, "joined", "short", "--format", "html", "--output", str(html), "--fdr", "1",
                       "--min-diff", "0")
    text = html.read_text()
    assert code == 0 and "content tokens per document" in text and "mean lengths differ" in text
    assert "controlled for document length" in text
    empty = tmp_path / "e.html"  # no row passes: the page still says what was compared
    code, _, _ = cli("diff", *s, "short", "short_again", "--format", "html", "--output", str(empty))
    assert code == 0 and "short_again: 120 documents" in empty.read_text()


# ----------------------------------------------------------------------- real text (slow) ----
@pytest.mark.slow
def test_null_on_real_text_only_longer_documents_differ_in_nothing(real_store: Path, smollm2_reader,
                                                                   test_sae_spec: str, tmp_path: Path) -> None:
    """GoEmotions comments against other GoEmotions comments joined in twos, with the shipped reader."""
    from saeembed.encode import encode_corpus

    store = tmp_path / "s.duckdb"
    shutil.copy(real_store, store)
    texts = pl.read_parquet(GOEMOTIONS_SAMPLE)["text"].to_list()
    pl.DataFrame({"text": _joined(texts[400:800])}).write_parquet(tmp_path / "joined.parquet")
    encode_corpus(store, tmp_path / "joined.parquet", "joined", sae=test_sae_spec, progress=False,
                  loaded_reader=smollm2_reader)
    kw = {"target": "joined", "top": None, "examples": 0, "keep_ubiquitous": True}
    tested = diff(store, ["joined", "ge"], fdr=None, min_diff=-2.0, **kw).height
    raw = diff(store, ["joined", "ge"], control="none", min_diff=0.0, **kw).height
    controlled = diff(store, ["joined", "ge"], min_diff=0.0, **kw).height
    assert raw > 0.2 * tested  # plain frequencies: a fifth of the latents or more "more frequent" in joined
    assert controlled <= 0.01 * tested
