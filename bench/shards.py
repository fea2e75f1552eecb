"""Scale of sharded runs: merge cost, one big run's memory, N shard processes vs one.

Three measurements, each printed as numbers (never asserted), all on 127.0.0.1 and bounded:

``merge``
    ``--shards`` shard folders of ``--cases`` cases each, written by flamingo's own writers
    (`RunFiles`, the tally, `part_view`) from generated judged results - 1% of them diffs across
    50 signatures, latencies from a log-normal - exactly the files a shard run leaves; then
    ``flamingo merge`` as a subprocess of the real CLI: wall time, CPU time and its peak RSS
    (VmHWM, as its gate.json reports it), rows merged per second.
``million``
    ``flamingo run`` of ``--big`` cases (default 1,000,000) in one run against the echo targets
    of bench/throughput.py: elapsed, pairs/s and peak RSS (``peak_rss_mb`` of gate.json: VmHWM,
    summed over the parent and its send workers; ``-- --workers 1`` for one process).
``parallel``
    the same ``--cases`` against the same echo targets, as one ``flamingo run --workers 1`` and
    as ``--shards`` shard processes (``--shard K/N --workers 1``) started at once, then merged:
    pairs/s of each (cases / wall time, the merge included for the shards), alternating rounds.

    python bench/shards.py merge --shards 8 --cases 100000
    python bench/shards.py million
    python bench/shards.py parallel --shards 2 --cases 20000 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import echo_targets, write_inputs

TIMEOUT = 3600.0


def timed(command: list[str], timeout: float = TIMEOUT) -> tuple[float, float, int, str]:
    """Run a command: wall seconds, CPU seconds (children), exit code, stderr."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.returncode, done.stderr


def flamingo(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "flamingo", *map(str, args)]


# --------------------------------------------------------------------------------------------
# merge: N shard folders written by flamingo's own writers, then `flamingo merge`
# --------------------------------------------------------------------------------------------


def write_shard(folder: Path, k: int, n: int, cases: int, seed: int) -> None:
    from flamingo import __version__
    from flamingo.judge import Tally
    from flamingo.merge import PartialRun, RunIdentity, part_view
    from flamingo.model import Case, CaseResult, Difference, GateThresholds, Response
    from flamingo.noise import NoiseModel
    from flamingo.report.clusters import latency_cdf
    from flamingo.report.files import RunFiles
    from flamingo.report.redact import Redactor

    rng = random.Random(seed)
    files = RunFiles(folder, Redactor())
    tally = Tally()
    headers = (("content-type", "application/json"),)
    for i in range(cases):
        template = f"echo::get {{{{ a }}}} {i % 50}"
        case = Case(
            id=f"echo::get {k}-{i}",
            suite="echo",
            name=f"get {k}-{i}",
            template=template,
            method="GET",
            path=f"/echo/{k}/{i}",
        )
        old = Response(200, "OK", headers, b"", rng.lognormvariate(0.5, 0.6), body_size=120)
        new = Response(200, "OK", headers, b"", rng.lognormvariate(0.55, 0.6), body_size=120)
        if i % 100 == 7:  # 1% diffs, 50 signatures
            diff = Difference("body", f"$.field{i % 50}", "a", "b")
            result = CaseResult(case, "diff", old, new, (diff,))
        else:
            result = CaseResult(case, "match", old, new)
        tally.add(result)
        files.write(result)
    thresholds = GateThresholds(min_match_rate=0.98)
    from flamingo.judge import evaluate_gate

    gate = evaluate_gate(thresholds, None, tally)
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    part = PartialRun(
        identity=RunIdentity(__version__, "bench-config", "bench-suites", shard=(k, n)),
        tally=tally.state(),
        noise=NoiseModel().state(),
        accepted=None,
        selected=cases,
        complete=True,
        reason="",
        started_at=now,
        finished_at=now,
        elapsed_s=1.0,
        gates=((None, thresholds),),
        targets={"old": "http://127.0.0.1:1", "new": "http://127.0.0.1:2"},
        settings={"concurrency": 100},
    )
    doc: dict[str, Any] = {"verdict": gate.verdict, "totals": gate.totals.as_dict()}
    files.finish(gate, doc, now, latency_cdf(tally), part_view(part))


def measure_merge(shards: int, cases: int) -> None:
    with tempfile.TemporaryDirectory(prefix="flamingo-merge-bench-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        for k in range(1, shards + 1):
            write_shard(root / "shards" / f"shard-{k}", k, shards, cases, seed=k)
        written = time.perf_counter() - start
        size = sum(p.stat().st_size for p in (root / "shards").rglob("*") if p.is_file())
        wall, cpu, code, err = timed(flamingo("merge", root / "shards", "--out", root / "merged"))
        if code not in (0, 1):
            raise RuntimeError(f"flamingo merge exited {code}: {err}")
        gate = json.loads((root / "merged" / "gate.json").read_text())
        total = shards * cases
        assert gate["totals"]["cases"] == total, gate["totals"]
        print(f"merge: {shards} shards x {cases:,} cases = {total:,} rows ({size / 1e6:.0f} MB of")
        print(f"  shard folders, written in {written:.1f}s by flamingo's writers)")
        print(f"  flamingo merge: {wall:.1f}s wall, {cpu:.1f}s CPU, {total / wall:,.0f} rows/s,")
        print(f"  peak RSS {gate['peak_rss_mb']} MB (VmHWM of the merge process)")
        print(f"  merged verdict {gate['verdict']}, totals {gate['totals']}")


# --------------------------------------------------------------------------------------------
# million: one run of --big cases against the echo targets
# --------------------------------------------------------------------------------------------


def measure_million(big: int, concurrency: int, extra: list[str]) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="flamingo-big-bench-") as tmp,
        echo_targets(1) as (
            urls,
            _,
        ),
    ):
        folder = Path(tmp)
        write_inputs(folder, urls, big, concurrency)
        out = folder / "out"
        command = flamingo(
            "run", "--targets", folder / "targets.yaml", "--suites", folder / "suites",
            "--out", out, "--no-progress", *extra,
        )  # fmt: skip
        wall, cpu, code, err = timed(command)
        gate = json.loads((out / "gate.json").read_text())
        if code != 0 or gate["totals"]["match"] != big:
            raise RuntimeError(f"flamingo run exited {code} ({gate.get('totals')}): {err}")
        print(f"million: {big:,} cases in one run ({' '.join(extra) or 'workers auto'})")
        print(f"  elapsed {gate['elapsed_s']:.1f}s run / {wall:.1f}s wall, {cpu:.1f}s CPU,")
        print(f"  {big / gate['elapsed_s']:,.0f} pairs/s (run), {big / wall:,.0f} pairs/s (wall)")
        by = gate.get("peak_rss_mb_by_process")
        print(f"  peak RSS {gate['peak_rss_mb']} MB" + (f" (by process: {by})" if by else ""))


# --------------------------------------------------------------------------------------------
# parallel: N shard processes vs one process, same cases, same targets
# --------------------------------------------------------------------------------------------


def measure_parallel(shards: int, cases: int, rounds: int, concurrency: int) -> None:
    one_rates: list[float] = []
    shard_rates: list[float] = []
    with (
        tempfile.TemporaryDirectory(prefix="flamingo-par-bench-") as tmp,
        echo_targets(1) as (
            urls,
            _,
        ),
    ):
        folder = Path(tmp)
        # the run's concurrency is per process: each shard gets its share, as in one process
        write_inputs(folder, urls, cases, concurrency)
        base = ["run", "--targets", folder / "targets.yaml", "--suites", folder / "suites"]
        base += ["--no-progress", "--workers", "1"]
        for r in range(rounds):
            order = ("one", "shards") if r % 2 == 0 else ("shards", "one")
            for side in order:
                out = folder / f"out-{side}-{r}"
                if side == "one":
                    wall, _, code, err = timed(flamingo(*base, "--out", out))
                    if code != 0:
                        raise RuntimeError(err)
                    one_rates.append(cases / wall)
                    continue
                start = time.perf_counter()
                procs = [
                    subprocess.Popen(
                        flamingo(*base, "--shard", f"{k}/{shards}", "--out", out / f"s{k}"),
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE,
                    )
                    for k in range(1, shards + 1)
                ]
                for proc in procs:
                    if proc.wait(timeout=TIMEOUT) != 0:
                        raise RuntimeError(proc.stderr.read().decode() if proc.stderr else "")
                _, _, code, err = timed(flamingo("merge", out, "--out", out / "merged"))
                if code != 0:
                    raise RuntimeError(err)
                shard_rates.append(cases / (time.perf_counter() - start))
    one, many = statistics.median(one_rates), statistics.median(shard_rates)
    print(f"parallel: {cases:,} cases, {rounds} alternating rounds, --workers 1 everywhere")
    print(f"  one process:            {one:,.0f} pairs/s (wall, start-up included)")
    print(f"  {shards} shard processes + merge: {many:,.0f} pairs/s (wall, merge included)")
    ratios = [round(s / o, 2) for s, o in zip(shard_rates, one_rates, strict=True)]
    print(f"  ratio {many / one:.2f}x (per round: {ratios})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["merge", "million", "parallel"])
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument(
        "--cases", type=int, default=100_000, help="cases per shard (merge), or in all (parallel)"
    )
    parser.add_argument("--big", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=100)
    args, extra = parser.parse_known_args(argv)
    extra = [a for a in extra if a != "--"]
    if args.what == "merge":
        measure_merge(args.shards, args.cases)
    elif args.what == "million":
        measure_million(args.big, args.concurrency, extra)
    else:
        measure_parallel(args.shards, args.cases, args.rounds, args.concurrency)
    return 0


if __name__ == "__main__":
    sys.exit(main())
