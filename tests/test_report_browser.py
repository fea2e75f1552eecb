"""report.html in a real browser: Debian's Chromium, headless, driven by Playwright.

One ``flamingo run`` against the hostile targets (tests/hostile.py) and one browser launch for the
module. Checks that the key elements render, the case filter, signature grouping and pagination
work, the console stays clean, and that no ``<script>`` or event handler from a response ran.
Screenshots go to the test run's temporary folder (``browser/`` under pytest's basetemp).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import CHROMIUM_ARGS, chromium_path
from hostile import NEW_TOKEN, hostile_pair, hostile_run

playwright = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("browser")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hostile-browser")
    with hostile_pair() as urls:
        proc = hostile_run(folder, urls)
    assert proc.returncode == 1, proc.stderr
    return folder / "out" / "report.html"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page(browser: Any, report: Path) -> Iterator[Any]:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.messages = []
    page.on("console", lambda m: page.messages.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: page.messages.append(f"pageerror: {e}"))
    page.on(
        "request",
        lambda r: r.url == report.as_uri() or page.messages.append(f"request: {r.url}"),
    )
    page.goto(report.as_uri())
    yield page
    page.close()


def test_key_elements_render(page: Any, shots: Path) -> None:
    page.screenshot(path=str(shots / "top.png"))
    assert page.locator("#verdict").inner_text() == "FAIL"
    assert "min_match_rate" in page.locator("#reason").inner_text()
    context = page.locator("#context").inner_text()
    assert "127.0.0.1" in context and "0.1.0" in context and "cases 305" in context
    first_check = page.locator("#checks tr.check-fail").first.inner_text()
    assert "min_match_rate" in first_check  # failing first
    clusters = page.locator("section.cluster")
    assert clusters.count() == len(
        json.loads((Path(page.url[7:]).parent / "signatures.json").read_text())["signatures"]
    )
    role = page.locator("section.cluster", has_text="$.role: string changed")
    assert "100 cases" in role.inner_text()
    assert role.locator("table.jsondiff").inner_text().count("$.role") == 1
    status = page.locator("section.cluster", has_text="status 200 → 500")
    assert status.locator("h4").first.inner_text() == "old: 200 OK"
    status.screenshot(path=str(shots / "cluster-status.png"))
    # the latency CDF: two curves, p50/p90/p99 of each marked
    assert page.locator("#latency-svg path").count() == 2
    assert page.locator("#latency-svg circle.mark").count() == 6
    page.locator("#latency-svg").screenshot(path=str(shots / "latency.png"))


def test_every_case_reachable_with_paging_and_filter(page: Any, shots: Path) -> None:
    count = page.locator("#case-count")
    assert count.inner_text() == "125 cases"
    assert page.locator("#case-rows tr.case").count() == 100  # one page
    assert page.locator("#case-page").inner_text() == "page 1 of 2"
    page.click("#case-next")
    assert page.locator("#case-rows tr.case").count() == 25
    page.fill("#case-filter", "item 150")
    assert count.inner_text() == "1 of 125 cases"
    assert page.locator("#case-rows tr.case td.mono").all_inner_texts() == ["hostile::item 150"]
    page.fill("#case-filter", "500 item")  # every word, anywhere: the 30 status changes
    assert count.inner_text() == "30 of 125 cases"
    page.fill("#case-filter", "")
    page.select_option("#case-outcome", "error")
    assert page.locator("#case-rows tr.case").all_inner_texts()[0].startswith("hostile::broken")
    page.select_option("#case-outcome", "")
    # "show its cases" on a cluster filters the list by its signature
    page.locator("section.cluster", has_text="status 200 → 500").locator("a[data-sig]").click()
    assert count.inner_text() == "30 of 125 cases"
    page.locator("#case-table").screenshot(path=str(shots / "cases-by-signature.png"))
    page.select_option("#case-signature", "")


def test_hostile_content_is_text_and_nothing_ran(page: Any, shots: Path) -> None:
    assert page.evaluate("window.__pwned") is None
    assert page.title().startswith("flamingo: fail")
    assert page.locator("#injected").count() == 0  # the <h1 id=injected> of a body
    assert page.locator("img").count() == 0  # no <img onerror> from a body or header
    evil = page.locator("section.cluster", has_text="header x-evil")
    assert "<script>window.__pwned = 3</script>" in evil.inner_text()
    evil.screenshot(path=str(shots / "hostile-header.png"))
    page.fill("#case-filter", "evil")
    assert "<script>window.__pwned" in page.locator("#case-rows").inner_text()
    page.fill("#case-filter", "")
    assert NEW_TOKEN not in page.content()


def test_no_console_errors_and_no_network(page: Any) -> None:
    assert page.messages == []


def test_a_run_without_differences_renders_cleanly(
    browser: Any, tmp_path: Path, shots: Path
) -> None:
    """No cases, no signatures, no latency samples: the page still renders, says so, and its
    script runs without an error."""
    from flamingo.report.html import Page, write_page

    gate = {
        "verdict": "error",
        "reason": "interrupted by SIGTERM",
        "stage": None,
        "totals": {"cases": 0, "match": 0, "diff": 0, "fail": 0, "error": 0},
        "checks": [{"name": "min_cases", "threshold": 1, "observed": 0, "passed": False}],
        "latency": {"old": {"count": 0, "p50": None}, "new": {"count": 0, "p50": None}},
    }
    path = tmp_path / "report.html"
    with open(path, "w", encoding="utf-8") as out:
        write_page(out, Page(gate=gate), iter(()), 0)
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(path.as_uri())
    assert page.locator("#verdict").inner_text() == "ERROR"
    assert page.locator("#reason").inner_text() == "interrupted by SIGTERM"
    assert page.locator("#case-count").inner_text() == "0 cases"
    assert page.locator("#latency-svg").count() == 0
    page.screenshot(path=str(shots / "empty.png"))
    page.close()
    assert errors == []
