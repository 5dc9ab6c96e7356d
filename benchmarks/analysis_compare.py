"""Time diff and correlate of one checkout on a store, to compare two versions of saeembed in one session.

    PYTHONPATH=/path/to/old/checkout python benchmarks/analysis_compare.py STORE old
    PYTHONPATH=.                     python benchmarks/analysis_compare.py STORE new

STORE is a synthetic store of ``benchmarks/analysis_latency.py`` (corpora ``A`` and ``B``); use a
copy, since a newer version keeps the latent statistics it computes on first use. Each analysis
runs once untimed (which computes those statistics on a store built without them), then twice;
wall and process CPU seconds are printed with the load average. correlate runs with the label
filter off, so what is timed is the co-occurrence counting and NPMI, not label embeddings.
Alternate the two versions (old, new, old, new) and compare ratios: these machines are noisy.
"""

from __future__ import annotations

import os
import resource
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    import saeembed
    from saeembed.analysis.correlate import correlate
    from saeembed.analysis.diff import diff

    store, tag = sys.argv[1], sys.argv[2]
    st = saeembed.open_store(store)
    for name, fn in [("diff", lambda: diff(st, ["A", "B"])),
                     ("correlate", lambda: correlate(st, "A", label_filter=False))]:
        fn()
        for _ in range(2):
            t0, c0 = time.perf_counter(), _cpu()
            out = fn()
            wall, cpu = time.perf_counter() - t0, _cpu() - c0
            print(f"{tag} {name}: wall {wall:.3f} s cpu {cpu:.3f} s rows {out.height} "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
