"""What one browser request may cost: CPU and wall seconds of the search requests a visitor can
send, through the real server, with the shipped SmolLM2 reader and default SAE.

    python benchmarks/browser_request_cost.py /tmp/browse-bench.duckdb [--unbounded]

The store is created on first use (200 GoEmotions comments from ``datasets/``). Each request runs
once untimed (loading the models), then is timed once; process CPU counts every thread of the
server's process. ``--unbounded`` also times the 3,000-word example through the Python API, which
has no bound: the cost a single request could cause before the browser bounded it.
"""

from __future__ import annotations

import http.client
import logging
import os
import resource
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _get(where: tuple[str, int], path: str) -> int:
    conn = http.client.HTTPConnection(*where, timeout=3600)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def _timed(label: str, fn) -> None:
    t0, c0 = time.perf_counter(), _cpu()
    result = fn()
    print(f"{label:58s} {result!s:>6}  cpu {_cpu() - c0:7.2f} s  wall {time.perf_counter() - t0:7.2f} s", flush=True)


def main() -> None:
    import polars as pl

    import saeembed
    from saeembed.analysis import search
    from saeembed.browse import make_server
    from saeembed.browse.app import MAX_QUERY_CHARS
    from saeembed.browse.routes import MAX_PHRASES

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no request log lines

    store = Path(sys.argv[1])
    if not store.exists():
        docs = pl.read_parquet(REPO / "datasets" / "goemotions" / "sample.parquet").head(200).select("text")
        saeembed.open_store(store).encode(docs, name="ge", progress=False)
    words = " ".join(["I really appreciate how quickly you answered and fixed it"] * 300)  # 3,000 words
    longest = ("Thanks so much for the help, this made my day. " * 40)[:MAX_QUERY_CHARS]
    rare = "\U0001d518\U0001d51e\U0001d52b" * (MAX_QUERY_CHARS // 3 - 1)
    phrases = ", ".join(f"topic {i}" for i in range(MAX_PHRASES))
    too_many = ", ".join(f"t{i}" for i in range(MAX_QUERY_CHARS // 5))
    print(f"load average {os.getloadavg()}; torch threads {__import__('torch').get_num_threads()}")
    srv = make_server(store, "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    where = (srv.host, srv.port)
    try:
        example, sae = "/search?corpus=ge&mode=example&q=", "/search?corpus=ge&mode=sae&q="
        requests = {
            "example, 3,000 words (refused: characters)": example + quote(words),
            f"example, {len(rare)} rare characters (refused: tokens)": example + quote(rare),
            f"example, {len(longest)} characters of English (answered)": example + quote(longest),
            f"sae, {too_many.count(',') + 1} phrases (refused: phrases)": sae + quote(too_many),
            f"sae, {MAX_PHRASES} phrases (answered)": sae + quote(phrases),
        }
        for label, path in requests.items():
            _get(where, path)  # models and caches load once
            _timed(label, lambda p=path: _get(where, p))
    finally:
        srv.shutdown()
        srv.server_close()
    if "--unbounded" in sys.argv:
        st = saeembed.open_store(store)
        _timed("Python API, example of 3,000 words (no bound)", lambda: search(st, "ge", words, mode="example").height)


if __name__ == "__main__":
    main()
