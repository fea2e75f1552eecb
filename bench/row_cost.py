"""Per-row cost of writing results.jsonl + junit.xml (`RunFiles.write`), and of one
`normalize_headers` call: the two per-case hot spots of the report edge and the pure core.

    python bench/row_cost.py [--rows 20000]

prints microseconds per row (best of 5) for a plain match through `rows.result_line`'s fast
path, the same row forced through ``dumps(result_view(...))``, and a diff row; then per
`normalize_headers` call on a typical response's headers. Files go to a temporary folder.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pytest

from flamingo.model import Case, CaseResult, CompareRules, Difference, Response
from flamingo.normalize import normalize_headers
from flamingo.report import files, rows
from flamingo.report.redact import Redactor

CASE = Case(id="s::a", suite="suite", name="a", template="s::a", method="GET", path="/items/1")
RESPONSE = Response(200, "OK", (("Date", "x"), ("Server", "y")), b"body", 1.2345, 4, "", 1)
PLAIN = CaseResult(CASE, "match", RESPONSE, RESPONSE, ())
DIFF = CaseResult(CASE, "diff", RESPONSE, RESPONSE, (Difference("status", "status", 200, 500),))
HEADERS = (
    ("Date", "Fri, 27 Nov 2026 17:00:00 GMT"),
    ("Server", "nginx"),
    ("Content-Type", "application/json"),
    ("Content-Length", "4"),
    ("Connection", "keep-alive"),
    ("X-Request-Id", "abc123"),
    ("Cache-Control", "no-cache"),
    ("Vary", "Accept"),
)
RULES = CompareRules(ignore_headers=frozenset({"date", "server", "x-request-id"}))


def per_row_us(result: CaseResult, count: int, general: bool = False) -> float:
    best = float("inf")
    for _ in range(5):
        with tempfile.TemporaryDirectory() as folder, pytest.MonkeyPatch.context() as patch:
            if general:
                patch.setattr(rows, "_plain_match_line", lambda result: None)
            writer = files.RunFiles(Path(folder), Redactor())
            start = time.perf_counter()
            for _ in range(count):
                writer.write(result)
            writer.flush()
            best = min(best, (time.perf_counter() - start) / count)
    return best * 1e6


def normalize_us(count: int) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(count):
            normalize_headers(HEADERS, RULES)
        best = min(best, (time.perf_counter() - start) / count)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000)
    count = parser.parse_args().rows
    print(f"plain match row (fast path):        {per_row_us(PLAIN, count):6.2f} us")
    print(f"plain match row (general writer):   {per_row_us(PLAIN, count, general=True):6.2f} us")
    print(f"diff row:                           {per_row_us(DIFF, count):6.2f} us")
    print(f"normalize_headers (8 lines, 3 ignored): {normalize_us(count):6.2f} us")


if __name__ == "__main__":
    main()
