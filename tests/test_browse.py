"""The feature browser through real HTTP: every page, bad ids and queries, attempts to write or
to read files, the store left free for writers, the host guard, and the pages in headless Chromium.

The server is the real one (``saeembed.browse.make_server`` on a free port, in a thread) over
``faces_store`` (real GoEmotions encodings; ``pos``/``neg`` cut out of them for the diff page).
"""

from __future__ import annotations

import html
import http.client
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from click.testing import CliRunner
from markupsafe import escape

from saeembed.api import open_store
from saeembed.browse import check_host, make_server
from saeembed.cli import main
from saeembed.errors import UserError
from tests.faces_support import load_in_chromium


@pytest.fixture(scope="module")
def server(faces_store: Path):
    srv = make_server(faces_store, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv.host, srv.port
    srv.shutdown()
    srv.server_close()


def _request(server: tuple[str, int], path: str, method: str = "GET", body: bytes | None = None,
             host: str | None = None) -> tuple[int, str]:
    """A real HTTP request; ``host`` replaces the ``Host`` header (what a DNS-rebinding page sends)."""
    conn = http.client.HTTPConnection(*server, timeout=300)
    try:
        conn.request(method, path, body=body, headers={} if host is None else {"Host": host})
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


@pytest.fixture(scope="module")
def ids(faces_store: Path) -> dict[str, Any]:
    """A latent that fires in the GoEmotions corpus, a document where it fires most, and the first
    40 characters of that document's text."""
    st = open_store(faces_store)
    row = st.sql("""SELECT feature_id, arg_max(doc_id, value) AS doc_id FROM activations a
                    JOIN features f USING (feature_id) WHERE doc_id >> 32 = 1 AND f.label IS NOT NULL
                    GROUP BY feature_id ORDER BY count(*) DESC, feature_id LIMIT 1""").row(0, named=True)
    text = st.sql("SELECT text FROM documents WHERE doc_id = ?", [int(row["doc_id"])])["text"][0][:40]
    # the latents page lists latents best label score first
    best = st.features().sort(["score", "feature_id"], descending=[True, False], nulls_last=True)["feature_id"][0]
    st.close()
    return {"feature": int(row["feature_id"]), "doc": int(row["doc_id"]), "text": text, "best": int(best)}


def test_every_page_answers(server: tuple[str, int], ids: dict[str, Any]) -> None:
    f, d = ids["feature"], ids["doc"]
    pages = {"/": ["ge", "pos", "neg", "Corpora"],
             "/features": ["Latents", f'href="/latent/{ids["best"]}"'],
             "/features?q=thank+you": ["labels best match"],
             f"/latent/{f}": [f"Latent {f}", "Density per corpus", "Activation histogram", "Correlated latents",
                              "Top documents in ge", "<mark"],
             f"/doc/{d}": [f"Document {d}", "Strongest latents", f'href="/latent/{f}"'],
             f"/doc/{d}?feature={f}": ["Tokens where", "<mark"],
             "/diff": ["Diff two corpora"],
             "/diff?a=neg&b=pos&fdr=1&top=10": ["Dataset diff", "more frequent in neg", "<mark",
                                                "content tokens per document mean", "controlled for document length"],
             "/diff?a=neg&b=pos&fdr=1e-12&control=none": ["neg: ", "pos: ", "controlled for nothing"],
             "/search": ["Search a corpus"],
             "/search?corpus=ge&q=Thanks+a+lot+for+this%21&mode=example&k=5": ["Ranked documents", "<mark"],
             "/assets/vega.js": ["vegaEmbed"], "/assets/page.css": [".saeembed"], "/assets/sortable.js": ["sort"]}
    for path, needles in pages.items():
        status, body = _request(server, path)
        assert status == 200, (path, body[-500:])
        for needle in needles:
            assert needle in body, (path, needle)
    status, body = _request(server, f"/latent?id={f}")
    assert status == 302 or (status == 200 and f"Latent {f}" in body)


def test_latents_page_shows_one_label_per_latent(server: tuple[str, int], faces_store: Path) -> None:
    """A latent ships a row per label source and a context; the page lists it once, with the label
    analyses show, best score first (a latent whose labels all miss the floor shows its context)."""
    st = open_store(faces_store)
    rows = st.sql("SELECT count(*) AS n, count(DISTINCT feature_id) AS f FROM features").row(0, named=True)
    shown = st.features().sort(["score", "feature_id"], descending=[True, False], nulls_last=True)
    st.close()
    assert rows["n"] > rows["f"]  # the shipped labels: more rows than latents
    for page, want in ((1, shown.head(200)), (shown.height // 200 + 1, shown.tail(shown.height % 200 or 200))):
        status, body = _request(server, f"/features?page={page}")
        assert status == 200
        linked = [int(i) for i in re.findall(r'href="/latent/(\d+)"', body)]
        assert linked[::2] == linked[1::2] == want["feature_id"].to_list()  # the id and the label link to it
        for label in want["label"].head(20).to_list():
            assert str(escape(label)) in body, (page, label)


def test_bad_ids_and_queries_give_clear_pages(server: tuple[str, int]) -> None:
    cases = {"/latent/999999": (404, "no latent 999999"), "/latent/-3": (404, "Not Found"),
             "/latent/abc": (404, "Not Found"), "/latent?id=x": (400, "whole number"),
             "/doc/1": (404, "no document 1"), "/doc/1?feature=5": (404, "no document 1"),
             "/search?corpus=nope&q=x": (404, "no corpus named 'nope'"),
             "/search?corpus=ge&q=x&mode=bogus": (400, "unknown mode"),
             "/cluster?corpus=ge&q=x&select=bogus": (400, "unknown selection"),
             "/search?corpus=ge&q=x&k=0": (400, "k must lie in"),
             "/diff?a=ge": (400, "pick two corpora"), "/diff?a=ge&b=ge": (400, "named twice"),
             "/diff?a=neg&b=pos&fdr=abc": (400, "fdr must be a number"),
             "/diff?a=neg&b=pos&control=nope": (400, "unknown control"),
             "/features?page=0": (400, "page must lie in"), "/features?sae=zzz": (404, "no SAE 'zzz'"),
             "/nowhere": (404, "Not Found")}
    for path, (code, text) in cases.items():
        status, body = _request(server, path)
        assert status == code and text in html.unescape(body), (path, status, body[-400:])
        assert "Traceback" not in body and 'class="error"' in body


def test_nothing_can_write_or_read_files(server: tuple[str, int], faces_store: Path) -> None:
    counts = "SELECT (SELECT count(*) FROM corpora) AS c, (SELECT count(*) FROM documents) AS d"
    before = open_store(faces_store).sql(counts)
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for path in ("/", "/features", "/latent/1", "/assets/vega.js"):
            status, body = _request(server, path, method, b"x=1")
            assert status == 405 and "Traceback" not in body, (method, path)
    for path in ("/assets/../../pyproject.toml", "/assets/..%2F..%2Fpyproject.toml", "/assets/%2e%2e/pyproject.toml",
                 "/assets/report.css", "/assets/vendor%2Fsortable.min.js", "/static/report.css",
                 "/" + quote(str(faces_store)), "/doc/" + quote("1; DROP TABLE documents")):
        status, body = _request(server, path)
        assert status == 404 and "[project]" not in body and "Traceback" not in body, path
    status, body = _request(server, "/search?corpus=ge&k=2&q=" + quote("x'); COPY documents TO '/tmp/leak.csv'; --"))
    assert status in (200, 400) and "Traceback" not in body and not Path("/tmp/leak.csv").exists()
    after = open_store(faces_store).sql(counts)
    assert after.equals(before)


def test_binds_only_this_machine_unless_asked(faces_store: Path) -> None:
    assert check_host("127.0.0.1") == "127.0.0.1" and check_host("::1") == "::1" and check_host("localhost")
    for host in ("0.0.0.0", "192.168.1.5", "example.org", "::"):
        with pytest.raises(UserError, match="--allow-remote"):
            check_host(host)
    assert check_host("0.0.0.0", allow_remote=["lab.example.org"]) == "0.0.0.0"
    for args in (["--host", "0.0.0.0"], ["--host", "0.0.0.0", "--allow-remote"]):  # the names are not optional
        res = CliRunner().invoke(main, ["browse", "--store", str(faces_store), *args])
        assert res.exit_code == 2 and "--allow-remote" in res.stderr, args


def test_requests_for_other_host_names_are_refused(server: tuple[str, int], ids: dict[str, Any]) -> None:
    """DNS rebinding: a page on evil.example makes its name resolve to 127.0.0.1 and reads the local
    server; its requests still say ``Host: evil.example``, and get 403 without a document in them."""
    port = server[1]
    doc = f"/doc/{ids['doc']}"
    text = ids["text"]
    for host in (f"evil.example:{port}", "evil.example", f"localhost.evil.example:{port}", f"127.0.0.1.nip.io:{port}",
                 "", f"[::2]:{port}"):
        for path in ("/", doc, "/search?corpus=ge&q=thanks", "/assets/vega.js"):
            status, body = _request(server, path, host=host)
            assert status == 403 and "allow-remote" in body and text not in html.unescape(body), (host, path, status)
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST", f"[::1]:{port}", "127.0.0.1"):
        status, body = _request(server, doc, host=host)
        assert status == 200 and text in html.unescape(body), (host, status)


def test_allow_remote_answers_exactly_the_names_it_was_given(faces_store: Path, ids: dict[str, Any]) -> None:
    srv = make_server(faces_store, "127.0.0.1", 0, allow_remote=["lab.example.org", "Box.Lan"])
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        where = (srv.host, srv.port)
        for host, want in (("lab.example.org", 200), (f"box.lan:{srv.port}", 200), ("localhost", 200),
                           ("sub.lab.example.org", 403), ("example.org", 403), ("evil.example", 403)):
            assert _request(where, "/", host=host)[0] == want, host
        # the same through a real browser whose resolver sends both names to this server
        rules = ("--host-resolver-rules=MAP lab.example.org 127.0.0.1, MAP evil.example 127.0.0.1",)
        dom, _ = load_in_chromium(f"http://lab.example.org:{srv.port}/doc/{ids['doc']}", flags=rules)
        assert f"Document {ids['doc']}" in dom and "Strongest latents" in dom
        dom, _ = load_in_chromium(f"http://evil.example:{srv.port}/doc/{ids['doc']}", flags=rules)
        assert "403" in dom and "--allow-remote evil.example" in dom and "Strongest latents" not in dom
        assert ids["text"] not in html.unescape(dom)
    finally:
        srv.shutdown()
        srv.server_close()


def test_queries_are_bounded_per_request(server: tuple[str, int]) -> None:
    from saeembed.browse.request import MAX_QUERY_CHARS
    from saeembed.browse.routes import EXAMPLE_TOKENS, MAX_PHRASES

    long = quote(", ".join(["thanks"] * (MAX_QUERY_CHARS // 6)))
    for path in (f"/search?corpus=ge&q={long}", f"/features?q={long}", f"/search?corpus=ge&mode=example&q={long}",
                 f"/cluster?corpus=ge&q={long}"):
        status, body = _request(server, path)
        assert status == 400 and f"at most {MAX_QUERY_CHARS}" in body, path
    # under the character bound but over the token bound: rare characters cost several tokens each
    rare = quote("\U0001d518\U0001d51e\U0001d52b" * (MAX_QUERY_CHARS // 3 - 1))
    status, body = _request(server, f"/search?corpus=ge&mode=example&q={rare}")
    assert status == 400 and f"at most {EXAMPLE_TOKENS}" in html.unescape(body), body[-300:]
    status, body = _request(server, "/search?corpus=ge&mode=example&k=3&q=" + quote("Thanks so much, " * 30))
    assert status == 200 and "Ranked documents" in body
    phrases = ", ".join(f"topic {i}" for i in range(MAX_PHRASES + 1))
    for path in ("/search?corpus=ge&mode=sae", "/search?corpus=ge&mode=hybrid", "/cluster?corpus=ge"):
        status, body = _request(server, f"{path}&q={quote(phrases)}")
        assert status == 400 and f"at most {MAX_PHRASES}" in body, path


def test_browse_command_serves_until_stopped(faces_store: Path) -> None:
    """The real command: it binds 127.0.0.1, says where, serves pages, and stops on SIGINT."""
    import os
    import re
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "saeembed", "browse", "--store", str(faces_store), "--port", "0"],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        line = ""
        while "http://" not in line:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "browse exited before serving"
        host, port = re.search(r"http://([0-9.]+):(\d+)/", line).groups()
        assert host == "127.0.0.1"
        status, body = _request((host, int(port)), "/")
        assert status == 200 and "Corpora" in body
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0


def test_pages_load_in_headless_chromium(server: tuple[str, int], ids: dict[str, Any], tmp_path: Path) -> None:
    base = f"http://{server[0]}:{server[1]}"
    for i, path in enumerate(["/", f"/latent/{ids['feature']}", "/diff?a=neg&b=pos&fdr=1&top=10"]):
        shot = tmp_path / f"page{i}.png" if i == 1 else None
        dom, console = load_in_chromium(base + path, shot)
        assert console == [], (path, console)
        assert "</html>" in dom and "Traceback" not in dom
        if path != "/":
            assert 'class="marks"' in dom, path  # Vega rendered the charts
        if shot is not None:
            png = shot.read_bytes()
            assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_store_is_not_held_between_requests(server: tuple[str, int], faces_store: Path) -> None:
    """Last in the module: the write changes the store, which also empties the highlight cache."""
    assert _request(server, "/")[0] == 200
    writer = ("import duckdb, sys; con = duckdb.connect(sys.argv[1]); "
              "con.execute('CREATE TABLE IF NOT EXISTS browse_probe AS SELECT 1 AS x'); con.close()")
    run = subprocess.run([sys.executable, "-c", writer, str(faces_store)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr  # a writer got the lock while the server runs
    status, body = _request(server, "/")
    assert status == 200 and "ge" in body
