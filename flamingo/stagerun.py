"""What a stage's rules add around one run of the engine (`flamingo.engine.Run`).

This module owns the glue between the engine and the stage rules: the case stream in rounds
(`flamingo.rounds`, ``min_duration``), the metrics scrapes before and after the run
(`flamingo.scrape`, ``resources``), how many cases a complete run must have judged, and the
stage's part of gate.json (``fallback``, ``resources``, ``rounds``). The rules themselves are
judged in `flamingo.stage`; the engine calls this object at four points and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from flamingo.judge import Tally
from flamingo.model import Case, Config, GateThresholds
from flamingo.rounds import Rounds
from flamingo.scrape import ResourceWatch
from flamingo.stage import ResourceScrapes

__all__ = ["StageRun", "fallback_view"]


def fallback_view(tally: Tally) -> dict[str, Any]:
    """gate.json ``fallback``: how many judged cases new handed to old."""
    totals = tally.totals
    judged = totals.cases - totals.error
    return {
        "count": tally.fallbacks,
        "judged": judged,
        "rate": round(tally.fallbacks / judged, 6) if judged else None,
        "examples": list(tally.fallback_examples),
    }


class StageRun:
    def __init__(
        self,
        config: Config,
        thresholds: GateThresholds,
        cases: Callable[[], Iterator[Case]],
        total: int,
    ) -> None:
        self.config = config
        self.total = total  # cases of one round
        self.rounds = Rounds(cases, thresholds.min_duration)
        self.watch = ResourceWatch.for_gate(config, thresholds)
        self.resources: ResourceScrapes | None = None

    def tally(self) -> Tally:
        return Tally(fallback=self.config.new.fallback)

    def cases(self) -> Iterator[Case]:
        return iter(self.rounds)

    def start(self) -> None:
        """Just before the first case is sent: the metrics before the run."""
        if self.watch is not None:
            self.watch.start()

    def finish(self) -> ResourceScrapes | None:
        """Once the last case is judged: the metrics after the run (None without bounds)."""
        if self.watch is not None:
            self.resources = self.watch.finish()
        return self.resources

    @property
    def expected(self) -> int:
        """The cases a complete run has judged: every case of every round handed out (never
        fewer than one full round)."""
        return max(self.total, self.rounds.handed_out)

    def document(self, tally: Tally) -> dict[str, Any]:
        """The stage's additions to gate.json."""
        doc: dict[str, Any] = {}
        if self.rounds.min_duration is not None:
            doc["rounds"] = self.rounds.rounds
        if self.config.new.fallback is not None:
            doc["fallback"] = fallback_view(tally)
        if self.resources is not None:
            scrapes = self.resources
            doc["resources"] = {
                "elapsed_s": round(scrapes.elapsed_s, 3),
                "scrape_error": scrapes.error or None,
                "metrics": {
                    metric: {
                        target: {
                            "kind": reading.kind,
                            "before": _value(scrapes.before, target, metric),
                            "after": reading.value,
                        }
                        for target, readings in scrapes.after.items()
                        if (reading := readings.get(metric)) is not None
                    }
                    for metric in (self.watch.metrics if self.watch is not None else ())
                },
            }
        return doc


def _value(readings: Any, target: str, metric: str) -> float | None:
    found = readings.get(target, {}).get(metric)
    return None if found is None else float(found.value)
