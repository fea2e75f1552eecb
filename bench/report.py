"""How big and how fast the reports of a large run are: report.html, the evidence store, and the
page in a real browser.

Synthesizes a run of ``--cases`` judged results (``--diffs`` of them differing, spread over
``--signatures`` signatures, plus ``--errors`` transport errors) and pushes every one through the
real writers (`flamingo.report.files.RunFiles`: results.jsonl, junit.xml, the evidence store,
the report index), then writes gate.json and report.html as a run does. Then it opens the page in
Debian's Chromium (Playwright, headless) and times the load, the first drawing of the case list,
and a filter over all cases. Prints the numbers; nothing leaves 127.0.0.1 (nothing is sent at all).

    python bench/report.py                                   # 100k cases, 5,000 diffs
    python bench/report.py --cases 100000 --diffs 20000 --body-bytes 8192
    python bench/report.py --no-browser
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from flamingo.judge import Tally, evaluate_gate
from flamingo.model import (
    Case,
    CaseResult,
    Difference,
    GateThresholds,
    Response,
    Target,
    TransportError,
)
from flamingo.report.clusters import ReportContext, latency_cdf
from flamingo.report.evidence import EvidenceLimits
from flamingo.report.files import RunFiles
from flamingo.report.redact import Redactor

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


WORDS = [
    "".join(random.Random(i).choice("abcdefghijklmnopqrstuvwxyz") for _ in range(2 + i % 9))
    for i in range(5000)
]


_text_rng = random.Random(11)
TEXT = " ".join(_text_rng.choice(WORDS) for _ in range(400_000))  # ~2.4 MB


def body(rng: random.Random, n: int, size: int, role: str) -> bytes:
    items = [{"id": n * 100 + i, "name": f"item-{rng.randrange(10**6)}"} for i in range(8)]
    doc: dict[str, Any] = {"id": n, "role": role, "items": items, "pad": ""}
    text = json.dumps(doc)
    # Text that compresses like real payloads do (about 3x), not like "xxxx" (1000x): a slice
    # of a long random text of words, at a random place.
    room = max(0, size - len(text))
    start = rng.randrange(len(TEXT) - room) if room < len(TEXT) else 0
    doc["pad"] = TEXT[start : start + room]
    return json.dumps(doc).encode()


def synthesize(args: argparse.Namespace, out: Path) -> tuple[float, float, dict[str, Any]]:
    rng = random.Random(7)
    targets = {
        "old": Target("old", "http://127.0.0.1:1"),
        "new": Target("new", "http://127.0.0.1:2"),
    }
    context = ReportContext(targets, EvidenceLimits(args.evidence_bytes, args.evidence_max_bytes))
    files = RunFiles(out, Redactor(["s3cret-token"]), context)
    tally = Tally()
    differing = set(rng.sample(range(args.cases), args.diffs + args.errors))
    erroring = set(rng.sample(sorted(differing), args.errors))
    headers = (("Content-Type", "application/json"), ("Cache-Control", "max-age=60"))
    started, cpu = time.perf_counter(), time.process_time()
    for n in range(args.cases):
        sig = n % args.signatures
        case = Case(
            id=f"suite-{sig % 7}::get /api/thing/{n}",
            suite=f"suite-{sig % 7}",
            name=f"get /api/thing/{n}",
            template=f"suite-{sig % 7}::get {{{{ path }}}} #{sig}",
            method="GET",
            path=f"/api/thing/{n}",
        )
        lat_old, lat_new = rng.lognormvariate(1.5, 0.5), rng.lognormvariate(1.6, 0.55)
        if n not in differing:
            old = Response(200, "OK", headers, b'{"ok": true}', lat_old)
            result = CaseResult(case, "match", old, Response(200, "OK", headers, old.body, lat_new))
        elif n in erroring:
            old = Response(200, "OK", headers, b'{"ok": true}', lat_old)
            new = TransportError("reset", "connection reset by peer", lat_new)
            result = CaseResult(case, "error", old, new)
        else:
            old = Response(200, "OK", headers, body(rng, n, args.body_bytes, "user"), lat_old)
            new = Response(
                200,
                "OK",
                (("Content-Type", "application/json"), ("Cache-Control", "max-age=300")),
                body(rng, n, args.body_bytes, "admin"),
                lat_new,
            )
            diffs = (
                Difference("body", f"$.role{sig}", "user", "admin"),
                Difference("header", "cache-control", "max-age=60", "max-age=300"),
            )
            result = CaseResult(case, "diff", old, new, diffs)
        tally.add(result)
        files.write(result)
    gate = evaluate_gate(GateThresholds(), None, tally)
    doc: dict[str, Any] = {
        "verdict": gate.verdict,
        "stage": None,
        "totals": gate.totals.as_dict(),
        "checks": [
            {"name": c.name, "threshold": c.threshold, "observed": c.observed, "passed": c.passed}
            for c in gate.checks
        ],
        "started_at": "2026-01-01T00:00:00Z",
        "finished_at": "2026-01-01T00:01:00Z",
        "elapsed_s": 60.0,
        "targets": {"old": targets["old"].base_url, "new": targets["new"].base_url},
        "latency": {"old": tally.latency("old"), "new": tally.latency("new")},
        "signatures": [],
    }
    files.finish(gate, doc, doc["started_at"], latency_cdf(tally))
    return time.perf_counter() - started, time.process_time() - cpu, doc


def browse(page_path: Path, shots: Path) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    times: dict[str, float] = {}
    with sync_playwright() as p:
        t0 = time.perf_counter()
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        times["browser_launch_s"] = time.perf_counter() - t0
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        t0 = time.perf_counter()
        page.goto(page_path.as_uri(), wait_until="load", timeout=120_000)
        page.wait_for_function(
            "document.getElementById('case-rows').children.length > 0", timeout=120_000
        )
        times["open_to_case_list_s"] = time.perf_counter() - t0
        times["page_js_heap_mb"] = page.evaluate(
            "performance.memory ? performance.memory.usedJSHeapSize / 1048576 : -1"
        )
        t0 = time.perf_counter()
        page.fill("#case-filter", "thing/4242")
        page.wait_for_function("document.getElementById('case-count').textContent.includes(' of ')")
        times["filter_all_cases_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        page.fill("#case-filter", "")
        page.click("#case-next")
        times["clear_and_next_page_s"] = time.perf_counter() - t0
        page.screenshot(path=str(shots / "bench-top.png"))
        if errors:
            print("page errors:", errors, file=sys.stderr)
        browser.close()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--diffs", type=int, default=5_000)
    parser.add_argument("--errors", type=int, default=200)
    parser.add_argument("--signatures", type=int, default=300)
    parser.add_argument("--body-bytes", type=int, default=2_048, help="per differing body")
    parser.add_argument("--evidence-bytes", type=int, default=64 * 1024)
    parser.add_argument("--evidence-max-bytes", type=int, default=256 * 1024 * 1024)
    parser.add_argument("--out", type=Path, help="keep the run folder here")
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="flamingo-bench-report-"))
    out.mkdir(parents=True, exist_ok=True)
    elapsed, cpu, doc = synthesize(args, out)
    sizes = {p.name: p.stat().st_size for p in out.iterdir() if p.is_file()}
    evidence = doc.get("evidence", {})
    print(f"cases {args.cases:,} · differing {args.diffs:,} · errors {args.errors:,} · "
          f"signatures {args.signatures} · differing body {args.body_bytes:,} B")  # fmt: skip
    print(
        f"writers: {elapsed:.2f} s wall, {cpu:.2f} s CPU in all "
        f"({cpu / args.cases * 1e6:.1f} µs CPU per case; synthesis of the results included)"
    )
    for name in sorted(sizes):
        print(f"  {name:<20} {sizes[name] / 1e6:9.2f} MB")
    print(
        f"evidence: {evidence.get('cases', 0):,} records, {evidence.get('omitted', 0):,} omitted, "
        f"{evidence.get('reduced', 0):,} with bodies cut; "
        f"{sizes.get('evidence.jsonl.gz', 0) / max(evidence.get('cases', 1), 1):,.0f} B per record"
    )
    print(f"report.html per non-matching case: "
          f"{sizes['report.html'] / (args.diffs + args.errors):,.0f} B")  # fmt: skip
    if not args.no_browser:
        for key, value in browse(out / "report.html", out).items():
            print(f"browser: {key:<24} {value:8.2f}")
    print(f"output: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
