"""The gate document (gate.json, CONTRACT §6): built from a run's records by one function, and
read back into records at this edge (``flamingo noise``) - the pure core never parses it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flamingo import __version__
from flamingo.errors import InputError
from flamingo.judge import gate_reason
from flamingo.noise import NoiseEntry
from flamingo.signature import describe as describe_signature
from flamingo.stage import judge_result

if TYPE_CHECKING:
    from flamingo.engine import RunSummary
    from flamingo.model import RunSettings


def gate_document(summary: RunSummary) -> dict[str, Any]:
    """gate.json of a finished run (not yet redacted: `RunFiles.finish` does that)."""
    gate, settings, config = summary.gate, summary.settings, summary.config
    cases = gate.totals.cases
    doc: dict[str, Any] = {
        "verdict": gate.verdict,
        "stage": gate.stage,
        "totals": gate.totals.as_dict(),
        "checks": [
            {"name": c.name, "threshold": c.threshold, "observed": c.observed, "passed": c.passed}
            | ({"detail": c.detail} if c.detail else {})
            for c in gate.checks
        ],
        "started_at": summary.started_at,
        "finished_at": summary.finished_at,
    }
    reason = gate_reason(gate, summary.errors)
    if reason:  # whenever the verdict is not pass (CONTRACT §6)
        doc["reason"] = reason
    doc["complete"] = True  # a finished run's document (the gate server serves false before)
    doc["judgeResult"] = judge_result(gate)
    doc["elapsed_s"] = summary.elapsed_s
    doc["selection"] = summary.selection
    doc["flamingo_version"] = __version__
    doc["targets"] = {"old": config.old.base_url, "new": config.new.base_url}
    doc["settings"] = settings_view(settings)
    doc["latency"] = summary.latency
    doc.update(summary.stage_rules)  # fallback, resources, rounds
    doc["peak_rss_mb"] = summary.peak_rss_mb
    if summary.peak_rss_mb_by_process:
        doc["peak_rss_mb_by_process"] = list(summary.peak_rss_mb_by_process)
    doc["signatures"] = [
        {
            "id": row.id,
            "template": row.key[0],
            "kind": row.key[1],
            "location": row.key[2],
            "change": row.key[3],
            "description": describe_signature(row.key),
            "example_change": row.example_change,
            "count": row.count,
            "share": round(row.count / cases, 6) if cases else 0.0,
            "examples": list(row.examples),
        }
        for row in summary.signatures
    ]
    doc["errors"] = [
        {
            "target": e.target,
            "kind": e.kind,
            "reason": e.reason,
            "count": e.count,
            "share": round(e.count / cases, 6) if cases else 0.0,
            "example": e.example,
            "message": e.message,
        }
        for e in summary.errors
    ]
    doc["noise"] = [noise_row(entry) for entry in summary.noise]
    if summary.accepted is not None:
        doc["accepted"] = summary.accepted
    if summary.partial is not None:  # what a merge checks: shard, selection, config, version
        doc["run"] = summary.partial.identity.view()
    return doc


#: gate.json ``settings`` key -> `RunSettings` field (written here, read back by a merge).
SETTINGS_FIELDS = {
    "concurrency": "concurrency",
    "rate_limit": "rate_limit",
    "timeout_s": "timeout",
    "retries": "retries",
    "workers": "workers",
}


def settings_view(settings: RunSettings) -> dict[str, Any]:
    """gate.json ``settings``: how the run sent."""
    return {key: getattr(settings, field) for key, field in SETTINGS_FIELDS.items()}


def noise_row(entry: NoiseEntry) -> dict[str, Any]:
    return {
        "template": entry.template,
        "kind": entry.kind,
        "location": entry.location,
        "differing": entry.differing,
        "samples": entry.samples,
        "rate": round(entry.rate, 6),
        "examples": list(entry.examples),
        "context": entry.context,
        "evidence": entry.evidence,
    }


def read_noise(run_dir: Path) -> tuple[NoiseEntry, ...]:
    """The noise a finished run learned, as records, from its gate.json (`InputError` when the
    folder holds no readable gate document)."""
    path = run_dir / "gate.json"
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))["noise"]
        return tuple(
            NoiseEntry(
                template=str(row["template"]),
                kind=str(row["kind"]),
                location=str(row["location"]),
                differing=int(row["differing"]),
                samples=int(row["samples"]),
                examples=tuple(str(e) for e in row.get("examples") or ()),
                context=str(row.get("context") or ""),
                evidence=str(row.get("evidence") or ""),
            )
            for row in rows
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"cannot read the learned noise: {exc}", str(path)) from None
