"""How the latency-regression check (flamingo.stage.mann_whitney_greater over HdrHistogram
buckets) compares with scipy.stats.mannwhitneyu on the raw latencies: cost and p-values.

    .venv/bin/python bench/latency_regression.py [--samples N ...]

For each size, old and new latencies are drawn from a log-normal (~10 ms median) with new
shifted by 0%, 1% and 5%; both go through a real `Tally` (3 significant digits), and the check
runs on its buckets. Printed per row: the seconds the check took, scipy's seconds on the raw
arrays, both p-values, and the number of distinct buckets. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.stats import mannwhitneyu

from flamingo.judge import Tally
from flamingo.model import Case, CaseResult, Response
from flamingo.stage import mann_whitney_greater

CASE = Case(id="b::x", suite="b", name="x", template="b::x", method="GET", path="/")


def tally_of(old_ms: np.ndarray, new_ms: np.ndarray) -> Tally:
    tally = Tally()
    for o, n in zip(old_ms.tolist(), new_ms.tolist(), strict=True):
        tally.add(
            CaseResult(CASE, "match", Response(200, "", (), b"", o), Response(200, "", (), b"", n))
        )
    return tally


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, nargs="+", default=[10_000, 100_000])
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    columns = ("samples", "shift", "buckets", "check s", "scipy s", "p check", "p scipy")
    print(" ".join(f"{c:>10}" for c in columns))
    for n in args.samples:
        for shift in (1.0, 1.01, 1.05):
            old = rng.lognormal(np.log(10), 0.3, n)
            new = rng.lognormal(np.log(10), 0.3, n) * shift
            tally = tally_of(old, new)
            started = time.perf_counter()
            old_b, new_b = tally.latency_buckets("old"), tally.latency_buckets("new")
            _, p = mann_whitney_greater(old_b, new_b)
            ours = time.perf_counter() - started
            started = time.perf_counter()
            reference = mannwhitneyu(new, old, alternative="greater", method="asymptotic").pvalue
            theirs = time.perf_counter() - started
            buckets = len({v for v, _ in old_b} | {v for v, _ in new_b})
            row = (
                n,
                shift,
                buckets,
                f"{ours:.4f}",
                f"{theirs:.4f}",
                f"{p:.3g}",
                f"{reference:.3g}",
            )
            print(" ".join(f"{c!s:>10}" for c in row))


if __name__ == "__main__":
    main()
