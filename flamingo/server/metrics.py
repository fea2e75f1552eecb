"""``GET /metrics``: the gate server's state in Prometheus text format (prometheus_client).

Computed from the store at each scrape (a custom collector), so the numbers are the runs on
disk: they survive a restart, and two scrapes never disagree with ``GET /runs``.

    metric                                   type     labels             value
    flamingo_runs_total                      counter  stage, verdict     finished runs
    flamingo_runs_active                     gauge    stage, status      queued / running runs
    flamingo_cases_total                     counter  stage, outcome     cases of finished runs
    flamingo_stage_verdict                   gauge    stage, verdict     1 for the latest finished
                                                                         run's verdict, else 0
    flamingo_stage_score                     gauge    stage              its Kayenta-style score
    flamingo_stage_fallback_rate             gauge    stage              its fallback rate (when the
                                                                         target declares fallbacks)
    flamingo_stage_last_finished_timestamp_seconds  gauge  stage         when it finished
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from flamingo.server.store import Store

__all__ = ["StoreCollector", "registry_for"]

VERDICTS = ("pass", "fail", "error")


class StoreCollector(Collector):
    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        runs = CounterMetricFamily(
            "flamingo_runs", "Finished runs of the gate server.", labels=["stage", "verdict"]
        )
        active = GaugeMetricFamily(
            "flamingo_runs_active", "Runs queued or running.", labels=["stage", "status"]
        )
        for stage, status, verdict, count in self.store.counts():
            if status == "done":
                runs.add_metric([stage, verdict or "error"], count)
            else:
                active.add_metric([stage, status], count)
        cases = CounterMetricFamily(
            "flamingo_cases", "Cases of finished runs by outcome.", labels=["stage", "outcome"]
        )
        for stage, outcome, count in self.store.case_totals():
            cases.add_metric([stage, outcome], count)
        verdict_gauge = GaugeMetricFamily(
            "flamingo_stage_verdict",
            "The verdict of the stage's latest finished run (1 for that verdict, 0 otherwise).",
            labels=["stage", "verdict"],
        )
        score = GaugeMetricFamily(
            "flamingo_stage_score",
            "Kayenta-style score (0-100) of the stage's latest finished run.",
            labels=["stage"],
        )
        fallback = GaugeMetricFamily(
            "flamingo_stage_fallback_rate",
            "Fallbacks / judged cases of the stage's latest finished run.",
            labels=["stage"],
        )
        finished = GaugeMetricFamily(
            "flamingo_stage_last_finished_timestamp_seconds",
            "When the stage's latest finished run finished (Unix time).",
            labels=["stage"],
        )
        for record in self.store.latest_per_stage():
            gate = record.gate or {}
            for verdict in VERDICTS:
                verdict_gauge.add_metric(
                    [record.stage, verdict], 1 if record.verdict == verdict else 0
                )
            judged = gate.get("judgeResult", {}).get("score", {}).get("score")
            score.add_metric([record.stage], judged if isinstance(judged, int | float) else 0)
            rate = (
                gate.get("fallback", {}).get("rate")
                if isinstance(gate.get("fallback"), dict)
                else None
            )
            if isinstance(rate, int | float) and not isinstance(rate, bool):
                fallback.add_metric([record.stage], rate)
            if record.finished_at:
                stamp = datetime.fromisoformat(record.finished_at.replace("Z", "+00:00"))
                finished.add_metric([record.stage], stamp.timestamp())
        yield from (runs, active, cases, verdict_gauge, score, fallback, finished)


def registry_for(store: Store) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store))
    return registry
