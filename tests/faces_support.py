"""Support for the tests of reports, the browser and headless Chromium.

``split_corpus`` adds a corpus made of some documents of an encoded one, copying their stored
documents and activations (real encodings of real text, no re-encoding), so diff has two real
corpora to compare on a clean clone, where only GoEmotions is available.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import duckdb
import pytest

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                  "--enable-logging=stderr", "--v=0", "--virtual-time-budget=15000", "--window-size=1280,1400"]


def split_corpus(store: Path, source: str, name: str, where: str) -> None:
    """Add corpus ``name``: the documents of ``source`` matching the SQL condition ``where``."""
    con = duckdb.connect(str(store))
    try:
        cid = con.execute("SELECT coalesce(max(corpus_id), 0) + 1 FROM corpora").fetchall()[0][0]
        src = con.execute("SELECT corpus_id FROM corpora WHERE name = ?", [source]).fetchall()[0][0]
        con.execute("BEGIN")
        con.execute(f"CREATE TEMP TABLE pick AS SELECT doc_id, row_number() OVER (ORDER BY row_idx) - 1 AS new_row "
                    f"FROM documents WHERE corpus_id = {src} AND ({where})")
        con.execute(f"INSERT INTO documents SELECT ({cid}::BIGINT << 32) | p.new_row, {cid}, p.new_row, d.text, "
                    f"d.n_tokens, d.meta, d.token_ends FROM documents d JOIN pick p USING (doc_id)")
        con.execute(f"INSERT INTO activations SELECT ({cid}::BIGINT << 32) | p.new_row, a.feature_id, a.value, "
                    f"a.total, a.n_active, a.peak_pos FROM activations a JOIN pick p USING (doc_id) "
                    f"ORDER BY a.feature_id, p.new_row")
        con.execute(f"INSERT INTO corpora SELECT {cid}, ?, source, (SELECT count(*) FROM pick), reader, layer, sae, "
                    f"pooling, current_timestamp, (SELECT sum(n_tokens) FROM documents WHERE corpus_id = {cid}), "
                    f"config FROM corpora WHERE corpus_id = {src}", [name])
        con.execute("DROP TABLE pick")
        con.execute("COMMIT")
    finally:
        con.close()


SENTIMENT = "json_contains(meta->'$.sentiment_group', '\"{}\"')"
POSITIVE = f"{SENTIMENT.format('positive')} AND NOT {SENTIMENT.format('negative')}"
NEGATIVE = f"{SENTIMENT.format('negative')} AND NOT {SENTIMENT.format('positive')}"


def chromium() -> str | None:
    """The Chromium binary; None (test skipped) unless SAEEMBED_REQUIRE_CHROMIUM=1, where it must exist."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("SAEEMBED_REQUIRE_CHROMIUM") == "1":
            pytest.fail("SAEEMBED_REQUIRE_CHROMIUM=1 but chromium is not installed (apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return exe


def load_in_chromium(url: str, screenshot: Path | None = None, flags: tuple[str, ...] = ()) -> tuple[str, list[str]]:
    """(DOM after scripts ran, console messages) of ``url`` in headless Chromium; with
    ``screenshot``, a second run writes a PNG there; ``flags`` are extra Chromium flags."""
    exe = chromium()
    with tempfile.TemporaryDirectory() as profile:
        run = subprocess.run([exe, *CHROMIUM_FLAGS, *flags, f"--user-data-dir={profile}", "--dump-dom", url],
                             capture_output=True, text=True, timeout=120)
        console = [ln for ln in run.stderr.splitlines() if ":CONSOLE" in ln]
        if screenshot is not None:
            subprocess.run([exe, *CHROMIUM_FLAGS, *flags, f"--user-data-dir={profile}", f"--screenshot={screenshot}",
                            url],
                           capture_output=True, text=True, timeout=120, check=True)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout, console
