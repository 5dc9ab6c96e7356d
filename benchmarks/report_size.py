"""Size of an HTML diff report with 200 rows and highlighted examples, and what it is made of.

    python benchmarks/report_size.py --store demo.duckdb negative positive

(the README's quick-start store). Writes the report next to the store and prints its size, the
share of the inlined Vega bundle and table sorter, and the rest (table, chart data, examples).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from saeembed.analysis import diff
from saeembed.report import report
from saeembed.report.assets import page_css, sortable_js, vega_bundle


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("corpora", nargs=2)
    ap.add_argument("--rows", type=int, default=200, help="rows in the table (split over the two targets)")
    ap.add_argument("--examples", type=int, default=3, help="example documents per side and row")
    ap.add_argument("--example-rows", type=int, default=10, help="rows (per target) with highlighted examples")
    args = ap.parse_args()
    df = diff(args.store, args.corpora, fdr=1.0, min_diff=0.0, top=args.rows // 2, examples=args.examples)
    t = time.perf_counter()
    rep = report(df, args.store, examples=args.examples, example_rows=args.example_rows)
    out = rep.save(Path(args.store).with_suffix(".diff-report.html"))
    secs = time.perf_counter() - t
    size = out.stat().st_size
    libs = len(vega_bundle().encode()) + len(sortable_js().encode()) + len(page_css().encode())
    groups = rep.sections[0].examples
    print(f"{out}: {df.height} rows, {sum(len(g.examples) for g in groups)} highlighted example documents "
          f"({len(groups)} rows), {size / 1e6:.2f} MB in {secs:.0f} s")
    print(f"  inlined libraries (Vega bundle, sorter, css): {libs / 1e6:.2f} MB; table, chart data and examples: "
          f"{(size - libs) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
