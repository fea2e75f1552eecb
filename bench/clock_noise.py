"""How often does a clock endpoint come out clean, with no ignore rule? (issue 14's outside check)

A suite of one clock case (``msec``, ``request_id``, ``expires_at``, a Date and an Expires header)
repeated 30 times with ``compare: {noise: auto}`` and no ignore rule, run N times (default 20)
against two instances of the clock (`flamingo.demo.clock`): it should match in every run. Then
the same with a ``new`` whose clock is broken in a planted way (msec null, msec constant,
request_id empty, the lifetime of ``expires_at``/``Expires`` cut from an hour to five minutes):
that must be caught (at least one case not ``match``) in every run.

    python bench/clock_noise.py [--runs 20] [--repeat 30]

prints one line per scenario: ``ok: matched 20 of 20 runs (cases not matching per run: ...)``.
Everything runs on 127.0.0.1 through the real engine (`flamingo.Session`), no files written.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from flamingo.demo.clock import CLOCK_MODES, clock_run, running_clock


def run_once(old: str, new: str, repeat: int, folder: Path) -> tuple[int, int, list[str]]:
    """(cases, matched, learned noise locations) of one run."""
    summary = clock_run(old, new, folder, repeat)
    totals = summary.gate.totals
    return totals.cases, totals.match, sorted({f"{e.kind} {e.location}" for e in summary.noise})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, running_clock("ok") as old:
        for mode in CLOCK_MODES:
            with running_clock(mode) as new:
                clean, misses, learned = 0, [], set()
                for _ in range(args.runs):
                    cases, matched, noise = run_once(old, new, args.repeat, Path(tmp))
                    clean += matched == cases
                    misses.append(cases - matched)
                    learned.update(noise)
                if mode == "ok":
                    print(
                        f"ok: matched {clean} of {args.runs} runs (cases not matching per run: "
                        f"{misses}); learned: {', '.join(sorted(learned))}"
                    )
                else:
                    caught = args.runs - clean
                    print(
                        f"planted {mode}: caught in {caught} of {args.runs} runs (cases not "
                        f"matching per run: {misses})"
                    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
