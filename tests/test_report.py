"""Reports, terminal snippets, notebook views and the atlas table, on the real example corpora.

The store is ``faces_store``: the session's real store (400 GoEmotions comments encoded with the
shipped reader and SAE, plus Amazon reviews where ../shared exists) with ``pos``/``neg`` cut out of
the GoEmotions comments for diffing. Every report is rendered for real (marks from the stored token
positions, and with ``shade`` every token recomputed by the reader) and checked for its rows,
labels and highlighted spans against token activations the reader recomputes.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

import saeembed
from saeembed.analysis import cluster, correlate, diff, search
from saeembed.api import open_store
from saeembed.cli import main
from saeembed.errors import UserError
from saeembed.highlight.recompute import token_activations
from saeembed.report import detect_kind, report
from tests.conftest import needs_amazon
from tests.faces_support import load_in_chromium

MARK = re.compile(r'<mark style="--s:([0-9.]+)(?:;--t:([0-9.]+))?" data-act="([^"]*)"[^>]*>(.*?)</mark>', re.S)
SPEC = re.compile(r'<script type="application/json" data-chart="([^"]+)">(.*?)</script>', re.S)


def _cli(args: list[str]) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, args)
    return res.exit_code, res.stdout, res.stderr


def _table_rows(page: str) -> int:
    body = page.split('<table class="sortable results">', 1)[1].split("</tbody>", 1)[0]
    return body.count("<tr>") - 1  # the header row


def _table_text(page: str) -> str:
    return html.unescape(page.split('<table class="sortable results">', 1)[1].split("</table>", 1)[0])


def _specs(page: str) -> list[dict]:
    return [json.loads(s) for _, s in SPEC.findall(page)]


def _self_contained(page: str) -> None:
    """Opens offline: no external script, stylesheet or image, and Vega is inlined."""
    markup = re.sub(r"(<script[^>]*>).*?</script>", r"\1</script>", page, flags=re.S)  # tags, not inlined code
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", markup)
    assert "vegaEmbed" in page and "sortable" in page


def _check_marks_match_activations(st, view, shade: bool = False) -> None:
    """Marks lie on tokens where the latent fires (recomputed independently): by default its strongest
    token; with ``shade`` every firing token."""
    toks = token_activations(st, [view.doc_id], [view.features[0]])
    firing = [t.strip() or t for t, a in zip(toks["token"], toks["activation"]) if a > 0]
    marks = [s for s in view.segments if s.strengths[0] > 0 or s.values[0] > 0]
    marked = [s.text.strip() or s.text for s in marks]
    assert marked and set(marked) <= set(firing)
    if shade:
        if not (view.clipped_start or view.clipped_end):
            assert sorted(marked) == sorted(firing)
        return
    strongest = toks["token"][int(toks["activation"].arg_max())]
    assert len(marks) == 1 and marked[0] == (strongest.strip() or strongest)


@pytest.fixture(scope="module")
def diff_df(faces_store: Path) -> pl.DataFrame:
    return diff(faces_store, ["neg", "pos"], fdr=1.0, top=200, examples=2)


def test_diff_report_shows_rows_chart_and_highlights(faces_store: Path, diff_df: pl.DataFrame, tmp_path: Path) -> None:
    st = open_store(faces_store)
    rep = report(diff_df, st, examples=2, example_rows=2)
    assert rep.kind == "diff" and rep.df is diff_df
    page = rep.save(tmp_path / "diff.html").read_text()
    _self_contained(page)
    assert _table_rows(page) == diff_df.height
    # the summary states both corpora (documents, content tokens) and what the test held fixed
    assert page.count("content tokens per document mean") == 2 and "controlled for document length" in page
    top = diff_df.filter(pl.col("rank") == 1)
    for label in top["label"].drop_nulls().to_list():
        assert f">{label}<" in _table_text(page)
    spec = _specs(page)[0]
    panels = spec["vconcat"]
    assert len(panels) == 2 and {p["title"] for p in panels} == {"more frequent in neg", "more frequent in pos"}
    values = next(iter(spec["datasets"].values()))
    assert {v["corpus"] for v in values} == {"neg", "pos"}
    assert all(0 <= v["low"] <= v["share"] <= v["high"] <= 1 for v in values)
    groups = rep.sections[0].examples
    assert len(groups) == 4 and all(len(g.examples) == 4 for g in groups)  # 2 rows × 2 targets, 2 docs per side
    _check_marks_match_activations(st, groups[0].examples[0].doc)
    marks = MARK.findall(page)
    assert marks and all(0 < float(s) <= 1 for s, _, _, _ in marks)
    assert groups[0].examples[0].doc.marked_text[0] in {html.unescape(m[3]) for m in marks}
    shaded = report(diff_df, st, examples=2, example_rows=1, shade=True).sections[0].examples
    _check_marks_match_activations(st, shaded[0].examples[0].doc, shade=True)  # every token, by the reader


def test_correlate_report_heatmap_and_coactive_documents(faces_store: Path, tmp_path: Path) -> None:
    st = open_store(faces_store)
    df = correlate(st, "pos", top=20, top_features=300, min_npmi=0.2)
    assert df.height > 2
    rep = report(df, st, corpus="pos", examples=2, example_rows=2)
    page = rep.save(tmp_path / "corr.html").read_text()
    _self_contained(page)
    assert _table_rows(page) == df.height
    heat = _specs(page)[0]
    assert heat["mark"]["type"] == "rect" and heat["encoding"]["color"]["field"] == "npmi"
    groups = rep.sections[0].examples
    assert len(groups) == 2
    for g, r in zip(groups, df.head(2).iter_rows(named=True)):
        for ex in g.examples:  # documents where both latents fire: both are shaded somewhere
            assert ex.doc.features == (r["feature_a"], r["feature_b"])
            assert any(s.values[0] > 0 for s in ex.doc.segments) and any(s.values[1] > 0 for s in ex.doc.segments)
    assert any(t for _, t, _, _ in MARK.findall(page))  # second latent's underline


def test_cluster_report_maps_documents_by_cluster(faces_store: Path, tmp_path: Path) -> None:
    st = open_store(faces_store)
    df = cluster(st, "pos", unfiltered=True, k=3)
    page = report(df, st, examples=1).save(tmp_path / "cluster.html").read_text()
    _self_contained(page)
    specs = _specs(page)
    points = next(iter(specs[0]["datasets"].values()))
    assert len(points) == int(df["size"].sum())  # every document is on the map
    assert {str(p["cluster"]) for p in points} == {str(c) for c in df["cluster"].to_list()}
    assert all(isinstance(p["x"], float) and isinstance(p["y"], float) for p in points)
    members = {d: c for c, ds in zip(df["cluster"], df["doc_ids"]) for d in ds}
    assert all(members[p["doc_id"]] == int(p["cluster"]) for p in points)
    bars = next(iter(specs[1]["datasets"].values()))
    assert {b["latent"].split()[0] for b in bars} == {str(f) for fs in df["top_features"] for f in fs}
    assert _table_rows(page) == df.height


def test_cluster_report_on_amazon_reviews(faces_store: Path, tmp_path: Path) -> None:
    """Longer documents (reviews of up to 400 characters) from ../shared, where it exists."""
    needs_amazon(faces_store)
    st = open_store(faces_store)
    df = cluster(st, "amazon", unfiltered=True, k=4)
    rep = report(df, st, examples=1)
    page = rep.save(tmp_path / "amazon.html").read_text()
    assert _table_rows(page) == 4 and len(next(iter(_specs(page)[0]["datasets"].values()))) == 400
    groups = rep.sections[0].examples
    assert sum(bool(g.examples[0].doc.features) for g in groups) >= 3
    for g, r in zip(groups, df.iter_rows(named=True)):
        view = g.examples[0].doc
        assert view.doc_id == r["central_docs"][0]
        if view.features:  # shaded for one of the cluster's distinctive latents, which fires there
            assert view.features[0] in r["top_features"] and view.highlighted and view.marked_text


def test_search_report_ranks_documents_with_highlights(faces_store: Path, tmp_path: Path) -> None:
    st = open_store(faces_store)
    df = search(st, "ge", "Thank you so much, I really appreciate it!", mode="example", k=5)
    rep = report(df, st, notes=["query: thanks"])
    page = rep.save(tmp_path / "search.html").read_text()
    assert _table_rows(page) == 5 and "query: thanks" in page
    ranked = rep.sections[0].examples[0].examples
    assert [e.doc.doc_id for e in ranked] == df["doc_id"].to_list()
    for e, f in zip(ranked, df["top_feature"]):
        assert e.doc.features == (f,) and e.doc.marked_text  # the top latent fires in each ranked document
    _check_marks_match_activations(st, ranked[0].doc)
    bars = next(iter(_specs(page)[0]["datasets"].values()))
    assert [b["rank"] for b in bars] == [1, 2, 3, 4, 5]


def test_notebook_view_is_static_and_frames_stay_polars(faces_store: Path, diff_df: pl.DataFrame) -> None:
    assert isinstance(diff_df, pl.DataFrame) and detect_kind(diff_df) == "diff"
    rep = saeembed.show(diff_df.head(6), faces_store, examples=1, example_rows=1)
    frag = rep._repr_html_()
    assert "<svg" in frag and "<script" not in frag and "<mark" in frag
    assert rep.df.equals(diff_df.head(6))
    with pytest.raises(UserError, match="polars DataFrame"):
        report(diff_df.to_dicts(), faces_store)  # type: ignore[arg-type]


def test_cli_html_and_terminal_snippets(faces_store: Path, tmp_path: Path) -> None:
    s = ["--store", str(faces_store)]
    out_file = tmp_path / "d.html"
    code, out, err = _cli(["diff", *s, "neg", "pos", "--fdr", "1", "--top", "3", "--examples", "1",
                           "--format", "html", "--output", str(out_file)])
    assert code == 0, err
    assert "HTML report" in err and _table_rows(out_file.read_text()) == 6
    code, out, err = _cli(["search", *s, "ge", "thanks a lot", "--mode", "dense", "--k", "3", "--format", "html"])
    assert code == 2 and "--output" in err
    # the table shows text with the activating span marked, machine formats keep the ids
    code, out, err = _cli(["diff", *s, "neg", "pos", "--fdr", "1", "--top", "3"])
    assert code == 0, err
    lines = out.splitlines()
    assert "neg (" in err and not lines[0].startswith("neg (")  # what was compared: on stderr, before the table
    assert any(line.split()[-1:] == ["example"] for line in lines[:4])
    assert "<<" in out and not re.search(r"\[\d{9,}", out)
    code, out, err = _cli(["diff", *s, "neg", "pos", "--fdr", "1", "--top", "3", "--format", "json"])
    rows = json.loads(out)
    assert all(isinstance(d, int) for r in rows for d in r["examples_target"]) and "example" not in rows[0]
    code, out, err = _cli(["cluster", *s, "neg", "--unfiltered", "--k", "2"])
    assert code == 0, err
    assert any(line.split()[-1:] == ["central"] for line in out.splitlines()[:4]) and "<<" in out


def test_report_loads_in_headless_chromium(faces_store: Path, diff_df: pl.DataFrame, tmp_path: Path) -> None:
    path = report(diff_df.filter(pl.col("rank") <= 10), faces_store, examples=1, example_rows=1).save(
        tmp_path / "r.html")
    dom, console = load_in_chromium(path.as_uri(), tmp_path / "r.png")
    assert console == []
    assert dom.count('class="marks"') >= 1  # Vega drew the chart (its SVG root)
    png = (tmp_path / "r.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_atlas_table_without_embedding_atlas(faces_store: Path, tmp_path: Path) -> None:
    from saeembed.atlas import atlas_frame, atlas_installed

    df = atlas_frame(faces_store, "ge", top_latents=3)
    docs = open_store(faces_store).documents("ge")
    assert df.height == docs.height and df["doc_id"].to_list() == docs["doc_id"].to_list()
    assert df["x"].is_finite().all() and df["y"].is_finite().all() and df["x"].std() > 0
    assert {"emo_gratitude", "sentiment_group", "top_latent", "latents"} <= set(df.columns)
    first = df.row(0, named=True)
    fired = set(open_store(faces_store).sql("SELECT feature_id FROM activations WHERE doc_id = ?",
                                            [first["doc_id"]])["feature_id"].to_list())
    assert len(first["latents"]) == 3 and {lat["index"] for lat in first["latents"]} <= fired
    assert first["top_latent"] == first["top_latents"][0] == first["latents"][0]["feature"]
    out = tmp_path / "ge.parquet"
    code, _, err = _cli(["atlas", "ge", "--store", str(faces_store), "--output", str(out), "--no-open"])
    assert code == 0, err
    assert pl.read_parquet(out).height == docs.height
    if not atlas_installed():
        code, _, err = _cli(["atlas", "ge", "--store", str(faces_store)])
        assert code == 2 and "pip install 'saeembed[atlas]'" in err
    code, _, err = _cli(["atlas", "ge", "--store", str(faces_store), "--host", "0.0.0.0"])
    assert code == 2 and "--allow-remote" in err
