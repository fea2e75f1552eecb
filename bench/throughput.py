"""Throughput and memory benchmark: `flamingo run` against a plain aiohttp reference client.

What it does, in one process tree on 127.0.0.1 only:

1. starts light echo targets in separate processes (a raw asyncio/uvloop HTTP/1.1 keep-alive
   server, no framework, so the *client* is the bottleneck: the servers' CPU share is printed);
   ``--servers 1`` serves both targets from one process, ``--servers 2`` one process each;
2. writes a targets file and an echo suite (a matrix product of exactly ``--cases`` cases) into a
   temporary folder;
3. alternates, ``--rounds`` times:
   (a) the reference: plain aiohttp, same concurrency, same pooling (one session per target,
       ``limit=concurrency``), both targets of a case concurrently, bodies read, nothing compared;
   (b) ``flamingo run`` as a subprocess of the real CLI, with normalization, comparison,
       results.jsonl and junit.xml all on, and its default ``workers: auto`` (on 2+ CPUs, one
       forked send worker per CPU; ``-- --workers 1`` measures a single process);
   rounds run a-b, b-a, a-b, ... so a drift of the machine's speed hits both sides alike;
4. prints pairs/s for each (median over rounds), the median of the per-round ratios, CPU time per
   pair (flamingo's includes its send workers), and flamingo's peak RSS (VmHWM, as gate.json
   reports it: with send workers, the parent's and every worker's summed).

``--instructions`` instead counts CPU instructions per pair of each side under valgrind (runs at
N and N/5 cases; the difference cancels start-up): deterministic on a noisy machine. flamingo
runs there as one process (``--workers 1``): the cost of a pair, wherever it is spent.

flamingo's pairs/s is given twice: ``run`` uses the run's own ``elapsed_s`` from gate.json (the
send/judge/write loop, the part that scales with cases), ``wall`` the whole process (interpreter
start, imports, YAML, the counting pass and the final report files included).

Bounded: every request goes to 127.0.0.1, every loop has a fixed count, every subprocess a timeout.

    python bench/throughput.py                      # 10k cases, concurrency 100, 3 rounds
    python bench/throughput.py --cases 100000 --rounds 1
    python bench/throughput.py --instructions --cases 2500
    python bench/throughput.py -- --workers 1         # flamingo in one process
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
#: Axis size of the generated matrix: ``--cases`` = A x B (+ a remainder request).
AXIS = 100

# --------------------------------------------------------------------------------------------
# The echo targets
# --------------------------------------------------------------------------------------------


class _EchoProtocol(asyncio.Protocol):
    """Minimal HTTP/1.1 keep-alive server: answers every request with a small JSON echo.

    Headers of each response: Content-Type, Content-Length, Date and a per-response
    X-Request-Id (noise the suite ignores), and a Server name that differs between the targets,
    so the harness has real (ignored) header differences to normalize on every case.
    """

    counter = 0

    def __init__(self, server_name: bytes) -> None:
        self.server_name = server_name
        self.buffer = b""
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop's TCPTransport is no asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        out = []
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buffer[:end]
            length = 0
            lower = head.lower()
            at = lower.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = lower.find(b"\r\n", at + 2)
                length = int(lower[at + 17 : stop if stop >= 0 else len(lower)])
            if len(buffer) < end + 4 + length:
                break
            body = buffer[end + 4 : end + 4 + length]
            buffer = buffer[end + 4 + length :]
            method, _, rest = head.partition(b" ")
            target = rest.partition(b" ")[0]
            out.append(self._response(method, target, body))
        self.buffer = buffer
        if out and self.transport is not None:
            self.transport.write(b"".join(out))

    def _response(self, method: bytes, target: bytes, body: bytes) -> bytes:
        _EchoProtocol.counter += 1
        payload = json.dumps(
            {
                "method": method.decode("latin-1"),
                "target": target.decode("latin-1"),
                "body_bytes": len(body),
                "ok": True,
            },
            separators=(",", ":"),
        ).encode()
        return b"".join(
            (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ",
                str(len(payload)).encode(),
                b"\r\nDate: ",
                _date(),
                b"\r\nServer: ",
                self.server_name,
                b"\r\nX-Request-Id: ",
                f"{_EchoProtocol.counter:032x}".encode(),
                b"\r\n\r\n",
                payload,
            )
        )


_date_cache: tuple[int, bytes] = (0, b"")


def _date() -> bytes:
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True).encode())
    return _date_cache[1]


def serve(sockets: list[tuple[socket.socket, str]]) -> None:
    """Serve the given listening sockets until SIGTERM (runs in the server subprocess)."""
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    for sock, name in sockets:
        loop.run_until_complete(
            loop.create_server(lambda n=name: _EchoProtocol(n.encode()), sock=sock, backlog=1024)
        )
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    loop.run_forever()


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time consumed so far by the given (live) processes."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


@contextlib.contextmanager
def echo_targets(processes: int) -> Iterator[tuple[dict[str, str], list[int]]]:
    """Start the old/new echo targets in ``processes`` (1 or 2) server subprocesses."""
    socks = {"old": _listening_socket(), "new": _listening_socket()}
    urls = {name: f"http://{HOST}:{s.getsockname()[1]}" for name, s in socks.items()}
    groups = [["old", "new"]] if processes == 1 else [["old"], ["new"]]
    children = []
    try:
        for group in groups:
            spec = ",".join(f"{socks[n].fileno()}:{n}" for n in group)
            children.append(
                subprocess.Popen(
                    [sys.executable, __file__, "--serve-fds", spec],
                    pass_fds=[socks[n].fileno() for n in group],
                )
            )
        for sock in socks.values():
            sock.close()  # the children own them now
        _wait_ready(urls)
        yield urls, [child.pid for child in children]
    finally:
        for child in children:
            child.terminate()
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()


def _wait_ready(urls: dict[str, str]) -> None:
    deadline = time.monotonic() + 10
    for url in urls.values():
        port = int(url.rsplit(":", 1)[1])
        while True:
            try:
                with socket.create_connection((HOST, port), timeout=1) as conn:
                    conn.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
                    if conn.recv(64).startswith(b"HTTP/1.1 200"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"echo target {url} did not start")
            time.sleep(0.05)


# --------------------------------------------------------------------------------------------
# The suite and targets files
# --------------------------------------------------------------------------------------------


def write_inputs(folder: Path, urls: dict[str, str], cases: int, concurrency: int) -> None:
    """targets.yaml and suites/echo.yaml producing exactly ``cases`` cases."""
    folder.joinpath("targets.yaml").write_text(
        "targets:\n"
        f"  old: {{ base_url: '{urls['old']}' }}\n"
        f"  new: {{ base_url: '{urls['new']}' }}\n"
        "run:\n"
        f"  concurrency: {concurrency}\n"
        "  timeout: 30s\n"
        "gates:\n"
        "  default: { min_match_rate: 1.0, max_error_rate: 0, min_cases: 1 }\n"
    )
    rows, rest = divmod(cases, AXIS)
    requests = []

    def axis(n: int) -> str:
        return "[" + ", ".join(str(i) for i in range(n)) + "]"

    if rows:
        requests.append(
            '  - name: "echo {{ a }}/{{ b }}"\n'
            '    path: "/echo/{{ a }}/{{ b }}"\n'
            '    query: { q: "{{ b }}" }\n'
            f"    matrix: {{ a: {axis(rows)}, b: {axis(AXIS)} }}\n"
        )
    if rest:
        requests.append(
            '  - name: "rest {{ r }}"\n'
            '    path: "/rest/{{ r }}"\n'
            f"    matrix: {{ r: {axis(rest)} }}\n"
        )
    suites = folder / "suites"
    suites.mkdir(exist_ok=True)
    suites.joinpath("echo.yaml").write_text(
        "suite: echo\n"
        "defaults:\n"
        "  method: GET\n"
        "  headers: { User-Agent: flamingo-bench, Accept: application/json }\n"
        "requests:\n" + "".join(requests) + "compare:\n"
        "  ignore_headers: [date, server, x-request-id]\n"
    )


def case_paths(cases: int) -> list[str]:
    """The same request targets the suite expands to, in the same order (for the reference)."""
    rows, rest = divmod(cases, AXIS)
    paths = [f"/echo/{a}/{b}?q={b}" for a in range(rows) for b in range(AXIS)]
    paths += [f"/rest/{r}" for r in range(rest)]
    return paths


# --------------------------------------------------------------------------------------------
# (a) the reference client
# --------------------------------------------------------------------------------------------


async def _reference(urls: dict[str, str], paths: list[str], concurrency: int) -> float:
    import aiohttp

    headers = {"User-Agent": "flamingo-bench", "Accept": "application/json"}
    sessions = [
        aiohttp.ClientSession(
            base,
            connector=aiohttp.TCPConnector(limit=concurrency, limit_per_host=0),
            skip_auto_headers=("User-Agent",),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        for base in (urls["old"], urls["new"])
    ]
    todo = iter(paths)
    done = 0

    async def get(session: aiohttp.ClientSession, path: str) -> int:
        async with session.get(path, headers=headers, allow_redirects=False) as resp:
            await resp.read()
            return resp.status

    async def worker() -> None:
        nonlocal done
        for path in todo:
            a, b = await asyncio.gather(get(sessions[0], path), get(sessions[1], path))
            if a != 200 or b != 200:
                raise RuntimeError(f"reference: {path}: {a} / {b}")
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(max(1, (concurrency + 1) // 2))))
    for session in sessions:
        await session.close()
    elapsed = time.perf_counter() - start
    assert done == len(paths)
    return elapsed


def run_reference(urls: dict[str, str], paths: list[str], concurrency: int) -> tuple[float, float]:
    """(pairs per second, CPU µs per pair) of the plain aiohttp loop (on uvloop, as flamingo)."""
    try:
        import uvloop

        factory: Any = uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        factory = None
    before = resource.getrusage(resource.RUSAGE_SELF)
    with asyncio.Runner(loop_factory=factory) as runner:
        elapsed = runner.run(_reference(urls, paths, concurrency))
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return len(paths) / elapsed, cpu / len(paths) * 1e6


# --------------------------------------------------------------------------------------------
# (b) flamingo run
# --------------------------------------------------------------------------------------------


@dataclass
class FlamingoRound:
    run_rate: float  # pairs/s over gate.json elapsed_s
    wall_rate: float  # pairs/s over the whole process
    cpu_us: float  # CPU time (user + system) of the whole process per pair, µs
    max_rss_mb: float
    verdict: str


def run_flamingo(folder: Path, cases: int, timeout: float, extra: list[str]) -> FlamingoRound:
    out = folder / "out"
    shutil.rmtree(out, ignore_errors=True)
    command = [
        sys.executable,
        "-m",
        "flamingo",
        "run",
        "--targets",
        str(folder / "targets.yaml"),
        "--suites",
        str(folder / "suites"),
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = start + timeout
    status, rusage = 0, None
    while True:
        pid, status, rusage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            child.kill()
            raise RuntimeError(f"flamingo run took longer than {timeout:.0f}s")
        time.sleep(0.01)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    stderr = child.stderr.read().decode() if child.stderr else ""
    gate = json.loads((out / "gate.json").read_text()) if (out / "gate.json").exists() else {}
    if child.returncode != 0 or gate.get("totals", {}).get("match") != cases:
        raise RuntimeError(
            f"flamingo run exited {child.returncode} (totals {gate.get('totals')}): {stderr}"
        )
    with open(out / "results.jsonl", "rb") as results:
        rows = sum(1 for _ in results)
    if rows != cases or not (out / "junit.xml").exists():
        raise RuntimeError(f"flamingo wrote {rows} result rows for {cases} cases")
    return FlamingoRound(
        run_rate=cases / gate["elapsed_s"],
        wall_rate=cases / wall,
        cpu_us=(rusage.ru_utime + rusage.ru_stime) / cases * 1e6,
        # flamingo's own VmHWM (gate.json), not the child's ru_maxrss: after a (v)fork + exec,
        # Linux carries the *parent's* peak into it, i.e. this script's memory when larger.
        max_rss_mb=gate["peak_rss_mb"],
        verdict=gate["verdict"],
    )


# --------------------------------------------------------------------------------------------
# --instructions: the same comparison in CPU instructions (valgrind), immune to a noisy machine
# --------------------------------------------------------------------------------------------


def _instructions(command: list[str], timeout: float = 1800) -> int:
    """Instructions the command executed (valgrind's cachegrind, no cache simulation)."""
    done = subprocess.run(
        [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            "--cachegrind-out-file=/dev/null",
            *command,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:  # a failed run costs little: its count would be meaningless
        raise RuntimeError(f"{command[:4]} exited {done.returncode}: {done.stderr[-2000:]}")
    for line in done.stderr.splitlines():
        if "I   refs:" in line or "I refs:" in line:
            return int(line.rsplit(":", 1)[1].replace(",", "").strip())
    raise RuntimeError(f"no instruction count from valgrind: {done.stderr[-2000:]}")


def count_instructions(cases: int, concurrency: int, servers: int) -> int:
    """Instructions per pair of each side: (I(cases) - I(cases/5)) / (cases - cases/5), so
    interpreter start, imports and file loading cancel out. The targets run outside valgrind."""
    if shutil.which("valgrind") is None:
        print("bench: --instructions needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 2
    small = max(1, cases // 5)
    python = os.path.realpath(sys.executable)  # valgrind must start the interpreter itself
    per_pair: dict[str, float] = {}
    with echo_targets(servers) as (urls, _pids), tempfile.TemporaryDirectory() as tmp:
        counts: dict[str, list[int]] = {"reference": [], "flamingo": []}
        for n in (small, cases):
            folder = Path(tmp) / str(n)
            folder.mkdir()
            write_inputs(folder, urls, n, concurrency)
            reference = [python, __file__, "--cases", str(n), "--concurrency", str(concurrency)]
            reference += ["--reference-child", urls["old"], urls["new"]]
            counts["reference"].append(_instructions(reference))
            # One process: valgrind counts the process it started, and the cost per pair is what
            # matters here (send workers spread it over cores, they do not reduce it).
            flamingo = [python, "-m", "flamingo", "run", "--no-progress", "--workers", "1"]
            flamingo += ["--targets", str(folder / "targets.yaml")]
            flamingo += ["--suites", str(folder / "suites"), "--out", str(folder / "out")]
            counts["flamingo"].append(_instructions(flamingo))
        for side, (a, b) in counts.items():
            per_pair[side] = (b - a) / (cases - small)
            print(f"{side:10} {per_pair[side] / 1000:8.0f}k instructions per pair", flush=True)
    ratio = per_pair["reference"] / per_pair["flamingo"]
    print(f"ratio      {ratio:.2f}x (reference instructions / flamingo instructions per pair)")
    return 0


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10_000, help="case pairs per run")
    parser.add_argument("--concurrency", type=int, default=100, help="requests in flight")
    parser.add_argument("--rounds", type=int, default=3, help="alternating (a)/(b) rounds")
    parser.add_argument(
        "--servers", type=int, choices=(1, 2), default=1, help="echo server processes"
    )
    parser.add_argument(
        "--only", choices=("reference", "flamingo"), help="run one side only (profiling)"
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds allowed for one flamingo run"
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count CPU instructions per pair under valgrind instead of timing (deterministic;"
        " runs --cases and --cases/5 once per side and takes the difference)",
    )
    parser.add_argument("--serve-fds", help=argparse.SUPPRESS)
    parser.add_argument("--reference-child", nargs=2, metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument(
        "flamingo_args", nargs="*", help="extra `flamingo run` arguments (after --)"
    )
    args = parser.parse_args(argv)
    if args.serve_fds:
        sockets = []
        for item in args.serve_fds.split(","):
            fd, name = item.split(":")
            sockets.append((socket.socket(fileno=int(fd)), name))
        serve(sockets)
        return 0
    if args.reference_child:
        old_url, new_url = args.reference_child
        run_reference({"old": old_url, "new": new_url}, case_paths(args.cases), args.concurrency)
        return 0
    if not 1 <= args.cases <= 1_000_000 or not 1 <= args.rounds <= 20:
        parser.error("--cases must be 1..1000000 and --rounds 1..20")
    if args.instructions:
        return count_instructions(args.cases, args.concurrency, args.servers)

    paths = case_paths(args.cases)
    reference: list[float] = []
    flamingo: list[FlamingoRound] = []
    with echo_targets(args.servers) as (urls, pids), tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_inputs(folder, urls, args.cases, args.concurrency)
        print(
            f"bench: {args.cases} case pairs, concurrency {args.concurrency}, "
            f"{args.rounds} rounds, {args.servers} echo server process(es), "
            f"{os.cpu_count()} cores",
            flush=True,
        )

        def server_load(cpu_before: float, seconds: float) -> str:
            busy = (cpu_seconds(pids) - cpu_before) / seconds
            return f"echo servers {busy:4.0%} of a core"

        def side_a(round_no: int) -> None:
            cpu = cpu_seconds(pids)
            rate, cpu_us = run_reference(urls, paths, args.concurrency)
            reference.append(rate)
            load = server_load(cpu, len(paths) / rate)
            print(
                f"round {round_no}: (a) reference {rate:7.0f} pairs/s"
                f"{'':19} CPU {cpu_us:4.0f} µs/pair{'':20}({load})",
                flush=True,
            )

        def side_b(round_no: int) -> None:
            cpu = cpu_seconds(pids)
            result = run_flamingo(folder, args.cases, args.timeout, args.flamingo_args)
            flamingo.append(result)
            load = server_load(cpu, args.cases / result.wall_rate)
            print(
                f"round {round_no}: (b) flamingo  {result.run_rate:7.0f} pairs/s run, "
                f"{result.wall_rate:5.0f} wall, CPU {result.cpu_us:4.0f} µs/pair, "
                f"peak RSS {result.max_rss_mb:3.0f} MB ({load})",
                flush=True,
            )

        for round_no in range(1, args.rounds + 1):
            # a-b, b-a, a-b, ...: a slow drift of the machine's speed hits both sides alike.
            order = [side_a, side_b] if round_no % 2 else [side_b, side_a]
            for side in order:
                if args.only is None or side is (side_a if args.only == "reference" else side_b):
                    side(round_no)
    print()
    if reference:
        print(
            f"reference  {statistics.median(reference):7.0f} pairs/s (median of {len(reference)})"
        )
    if flamingo:
        run_rate = statistics.median(r.run_rate for r in flamingo)
        wall_rate = statistics.median(r.wall_rate for r in flamingo)
        rss = max(r.max_rss_mb for r in flamingo)
        print(
            f"flamingo   {run_rate:7.0f} pairs/s run, {wall_rate:.0f} wall "
            f"(median of {len(flamingo)}); peak RSS {rss:.0f} MB"
        )
        if reference:
            # Per round, each side against its neighbour in time; then the median of rounds.
            runs = statistics.median(
                f.run_rate / r for f, r in zip(flamingo, reference, strict=True)
            )
            walls = statistics.median(
                f.wall_rate / r for f, r in zip(flamingo, reference, strict=True)
            )
            print(f"ratio      {runs:.2f}x run, {walls:.2f}x wall (median of per-round ratios)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
