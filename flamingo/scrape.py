"""Scraping the targets' Prometheus endpoints (``targets.X.metrics_url``) around a run.

This module owns the only network IO of the resource rules: one GET of each ``metrics_url``
before the run and one after, read with prometheus_client's own parser (`flamingo.stage`), and
the clock between them. What the readings mean for the gate is decided in `flamingo.stage`.

Fail closed: a scrape that fails (connection, timeout, non-200 answer, a body that is not
Prometheus text, one larger than `MAX_BYTES`) is recorded as the run's ``error`` reason, never
skipped; a metric that is merely absent from an answer leaves its check uncomputable (it fails).
Endpoints are scraped only when the evaluated gate has ``resources:`` bounds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import httpx

from flamingo.errors import ScrapeError
from flamingo.model import Config, GateThresholds
from flamingo.stage import MetricReading, ResourceScrapes, read_metrics

__all__ = ["MAX_BYTES", "ResourceWatch", "ScrapeError", "scrape"]

#: The largest exposition read; a node exporter's is ~100 KiB.
MAX_BYTES = 16 * 1024 * 1024


def scrape(
    url: str, metrics: Sequence[str], *, timeout: float = 10.0, target: str = "new"
) -> dict[str, MetricReading]:
    """One scrape of ``url``: the readings of ``metrics`` (see `flamingo.stage.read_metrics`)."""
    where = f"targets.{target}.metrics_url"
    try:
        with (
            httpx.Client(timeout=timeout, follow_redirects=False) as client,
            client.stream("GET", url, headers={"Accept": "text/plain"}) as response,
        ):
            if response.status_code != 200:
                raise ScrapeError(f"scraping {where} failed: HTTP {response.status_code}")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_BYTES:
                    raise ScrapeError(f"scraping {where} failed: more than {MAX_BYTES} bytes")
    except httpx.HTTPError as exc:
        raise ScrapeError(f"scraping {where} failed: {type(exc).__name__}: {exc}") from exc
    try:
        return read_metrics(body.decode("utf-8", errors="replace"), metrics)
    except ValueError as exc:
        raise ScrapeError(f"scraping {where} failed: {exc}") from exc


Scraper = Callable[..., dict[str, MetricReading]]


class ResourceWatch:
    """Scrapes every target with a ``metrics_url`` before (`start`) and after (`finish`) a run.

    A failure at `start` is remembered and reported by `finish`, so the run itself still
    happens and its results are kept; the verdict is ``error`` either way.
    """

    def __init__(
        self,
        urls: Mapping[str, str],
        metrics: Sequence[str],
        *,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        scraper: Scraper = scrape,
    ) -> None:
        self.urls = dict(urls)
        self.metrics = tuple(dict.fromkeys(metrics))
        self.timeout = timeout
        self.clock = clock
        self.scraper = scraper
        self.error = ""
        self._before: dict[str, dict[str, MetricReading]] = {}
        self._started = 0.0

    @classmethod
    def for_gate(cls, config: Config, gate: GateThresholds) -> ResourceWatch | None:
        """A watch over ``config``'s targets for ``gate``'s bounds; None without bounds."""
        if not gate.resources:
            return None
        urls = {
            target.name: target.metrics_url
            for target in (config.old, config.new)
            if target.metrics_url is not None
        }
        metrics = [bound.metric for bound in gate.resources]
        return cls(urls, metrics, timeout=config.run.timeout)

    def _scrape_all(self) -> dict[str, dict[str, MetricReading]]:
        readings = {}
        for target, url in self.urls.items():
            try:
                readings[target] = self.scraper(
                    url, self.metrics, timeout=self.timeout, target=target
                )
            except ScrapeError as exc:
                self.error = self.error or str(exc)
        return readings

    def start(self) -> None:
        self._before = self._scrape_all()
        self._started = self.clock()

    def finish(self) -> ResourceScrapes:
        after = self._scrape_all()
        elapsed = self.clock() - self._started
        return ResourceScrapes(elapsed, self._before, after, self.error)
