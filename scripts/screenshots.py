"""Regenerate the docs' screenshots of the reports and the browser (docs/img/*.png).

    python scripts/screenshots.py --store demo.duckdb      # the README quick-start store

Needs headless Chromium (``apt-get install -y chromium``) and Pillow (``pip install pillow``, only
for this script: it downscales and quantises the PNGs so each stays well under 200 kB).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from saeembed.analysis import cluster, correlate, diff, search
from saeembed.browse import make_server
from saeembed.report import report

OUT = Path(__file__).resolve().parents[1] / "docs" / "img"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
         "--hide-scrollbars", "--virtual-time-budget=20000"]


def shoot(url: str, out: Path, width: int = 1280, height: int = 1500, scale: float = 0.62) -> None:
    """Screenshot ``url`` into ``out``: downscaled by ``scale`` and quantised to 96 colours."""
    from PIL import Image

    exe = shutil.which("chromium") or "chromium"
    with tempfile.TemporaryDirectory() as profile:
        raw = Path(profile) / "raw.png"
        subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                        f"--screenshot={raw}", url], check=True, capture_output=True, timeout=180)
        img = Image.open(raw).convert("RGB")
        img = img.resize((int(img.width * scale), int(img.height * scale)), Image.LANCZOS)
        img.quantize(colors=96, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    print(f"{out.name}: {out.stat().st_size / 1e3:.0f} kB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--a", default="negative")
    ap.add_argument("--b", default="positive")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp())
    st, a, b = args.store, args.a, args.b
    reports = {
        "report-diff": report(diff(st, [a, b], top=30), st, example_rows=3),
        "report-correlate": report(correlate(st, a, top=60), st, corpus=a, example_rows=3),
        "report-cluster": report(cluster(st, b, unfiltered=True, k=4), st, examples=2),
        "report-search": report(search(st, b, "gratitude, thanks", k=10), st, notes=["query 'gratitude, thanks'"]),
    }
    for name, rep in reports.items():
        shoot(rep.save(tmp / f"{name}.html").as_uri(), OUT / f"{name}.png")
    server = make_server(st, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.port}"
    latent = int(diff(st, [a, b], top=1)["feature_id"][0])
    pages = {"browse-corpora": "/", "browse-latent": f"/latent/{latent}", "browse-diff": f"/diff?a={a}&b={b}&top=40",
             "browse-search": f"/search?corpus={b}&q=gratitude&k=8"}
    for name, path in pages.items():
        shoot(base + path, OUT / f"{name}.png", height=1100 if name == "browse-corpora" else 1500)
    server.shutdown()


if __name__ == "__main__":
    main()
