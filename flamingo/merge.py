"""Merging partial runs into one: shards of ``--shard K/N`` (or a run's parallel workers) -> the
run that one unsharded process would have made.

Theory of operation
-------------------
Every run, sharded or not, ends with a `PartialRun`: its identity (flamingo version, a hash of the
config and one of the suites, the selection, its shard) and everything the gate and the report
are computed from, as plain data - the tally (counters, the accepted count, each target's latency
as an *encoded HdrHistogram* plus exact sum and maximum, every difference signature cluster), the
noise observations (per template: samples, and how often each location differed between two old
responses), and the use of accepted differences. A run writes it as ``partial.json`` beside
gate.json.

`merge_parts` adds partial runs up: counters add, histogram buckets add (so every percentile is the
one a single histogram given every sample would report: the merge is exact at the histogram's
precision, 3 significant digits), signature clusters add by signature, noise counts add by
(template, location) - so what is noise is decided as if one model had seen every sample - and
accepted-difference use adds by entry. The gate is then evaluated by the one gate evaluation
(`flamingo.judge.evaluate_gate`) over the merged tally, for any stage the config defines.

What is equal to an unsharded run, and what is not:

* totals, per-case outcomes, signatures and their counts, accepted use: equal, because each case
  is judged alone and every count is a sum - except that past `judge.MAX_CLUSTERS` distinct
  signatures, *which* ones fold into ``(other)`` depends on order (in a single run too);
* latency percentiles: equal within the histogram's precision (the same buckets add up);
* noise: a case is judged against the counts its template had when it was released (the first
  results of a template wait for `noise.DEFAULT_MIN_SAMPLES` samples). Were a template's cases
  split over shards, each shard would decide from its own share of the samples - a location that
  differed in one shard's samples would not be noise in another - and the outcomes could differ.
  So ``--shard`` keeps every case of a noise-learning template in one shard
  (`flamingo.select.shard_key`): that shard sees exactly the samples the unsharded run sees, and
  decides as it would. The merged ``noise`` rows are the summed observations. What stays
  order-dependent is what is order-dependent in any run: which results of a template with more
  than `DEFAULT_MIN_SAMPLES` cases were judged before the last samples arrived.
* examples (the first case ids of a signature, noise example values): the first in shard order,
  where a run keeps the first in completion order.

`check_parts` refuses what cannot be one run: parts made by other flamingo versions, from other
config or suites, with another selection, of different shard counts, a shard given twice, or one
missing (the message names it). Everything above the "reading and writing" line is pure: records
in, records out. The readers and writers below it are the edge (`read_part`, `merge_dirs`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from flamingo.errors import InputError
from flamingo.judge import ErrorRow, LatencyState, Tally, TallyState, TopRow, evaluate_gate
from flamingo.model import (
    OUTCOMES,
    AcceptedRule,
    Config,
    GateResult,
    GateThresholds,
    LatencyRegression,
    ResourceBound,
    RunSettings,
    Target,
)
from flamingo.noise import NoiseModel, NoiseObservation, NoiseState, Variation
from flamingo.regex import Regex

__all__ = [
    "PARTIAL_FILE",
    "MergedRun",
    "PartialRun",
    "RunIdentity",
    "check_parts",
    "config_gates",
    "config_hash",
    "find_run_dirs",
    "fingerprint",
    "merge_accepted",
    "merge_dirs",
    "merge_parts",
    "part_from_view",
    "part_view",
    "read_part",
    "suites_hash",
]

#: The file every run writes beside gate.json: its `PartialRun`.
PARTIAL_FILE = "partial.json"
#: The version of partial.json's layout; a reader refuses other versions.
PARTIAL_FORMAT = 1


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunIdentity:
    """What a run was: which flamingo, which config and suites, which cases of them."""

    flamingo_version: str
    config_hash: str
    suites_hash: str
    keyword: str | None = None  # -k
    tags: tuple[str, ...] = ()  # --tag
    shard: tuple[int, int] | None = None  # (K, N), 1-based

    @property
    def shard_text(self) -> str | None:
        return None if self.shard is None else f"{self.shard[0]}/{self.shard[1]}"

    def view(self) -> dict[str, Any]:
        """gate.json ``run``: the identity a merge checks."""
        return {
            "shard": self.shard_text,
            "selection": {"k": self.keyword, "tags": list(self.tags)},
            "config_hash": self.config_hash,
            "suites_hash": self.suites_hash,
            "flamingo_version": self.flamingo_version,
        }


@dataclass(frozen=True)
class PartialRun:
    """One run's mergeable state (see the module docstring)."""

    identity: RunIdentity
    tally: TallyState
    noise: NoiseState
    accepted: dict[str, Any] | None  # `AcceptedList.report()`, None without accepted.yaml
    selected: int  # the cases this part was to judge
    complete: bool
    reason: str  # why it did not complete ('' when it did)
    started_at: str
    finished_at: str
    elapsed_s: float
    gates: tuple[tuple[str | None, GateThresholds], ...]  # (None = default, thresholds), stages
    targets: dict[str, str]
    settings: dict[str, Any]
    peak_rss_mb: float | None = None
    counts_fallbacks: bool = False  # targets.new.fallback is set: gate.json has ``fallback``
    source: str = ""  # where it was read from, for messages

    @property
    def label(self) -> str:
        shard = self.identity.shard_text
        name = f"shard {shard}" if shard else "unsharded run"
        return f"{name} ({self.source})" if self.source else name

    @property
    def judged(self) -> int:
        return sum(count for _, count in self.tally.counts)


@dataclass(frozen=True)
class MergedRun:
    """Partial runs added up: the state one run over all their cases would have ended with."""

    identity: RunIdentity  # the parts' identity, unsharded
    tally: Tally
    noise: NoiseModel
    accepted: dict[str, Any] | None
    complete: bool
    reason: str
    started_at: str
    finished_at: str
    elapsed_s: float
    gates: tuple[tuple[str | None, GateThresholds], ...]
    targets: dict[str, str]
    settings: dict[str, Any]
    parts: tuple[PartialRun, ...]

    def thresholds(self, stage: str | None) -> GateThresholds:
        for name, thresholds in self.gates:
            if name == stage:
                return thresholds
        known = ", ".join(name for name, _ in self.gates if name is not None) or "none defined"
        raise InputError(f"--stage: unknown stage '{stage}' (stages: {known})")

    def gate(self, stage: str | None) -> GateResult:
        """The verdict of ``stage`` (None: the default gate) over the merged tally."""
        # min_duration: every shard sent for at least as long as the shortest one did. A
        # stage with resource bounds cannot be judged from shards (each scraped the targets
        # around its own slice): those checks have no data, so they fail closed.
        return evaluate_gate(
            self.thresholds(stage),
            stage,
            self.tally,
            complete=self.complete,
            reason=self.reason,
            elapsed_s=min(part.elapsed_s for part in self.parts),
        )


# --------------------------------------------------------------------------------------------
# Identity: fingerprints of config and suites
# --------------------------------------------------------------------------------------------

#: Fields that say where a thing was read from, not what it is: two machines that check out the
#: same repository in different folders run the same config.
_WHERE_FIELDS = {
    "Config": {"path", "accepted_path", "secrets"},
    "Suite": {"file", "line"},
    "RequestSpec": {"line"},
    "Case": {"source"},
    "AcceptedRule": {"source"},
}


def _canonical(value: Any, secrets: tuple[str, ...]) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        skip = _WHERE_FIELDS.get(type(value).__name__, set())
        return {
            "@": type(value).__name__,
            **{
                f.name: _canonical(getattr(value, f.name), secrets)
                for f in dataclasses.fields(value)
                if f.name not in skip
            },
        }
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, "[REDACTED]")
        return value
    if isinstance(value, Regex):
        return {"regex": _canonical(value.pattern, secrets)}
    if isinstance(value, frozenset | set):
        items = [_canonical(v, secrets) for v in value]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, list | tuple):
        return [_canonical(v, secrets) for v in value]
    if isinstance(value, dict):
        return {str(k): _canonical(v, secrets) for k, v in value.items()}
    if isinstance(value, bytes):
        return {"sha256": hashlib.sha256(value).hexdigest()}
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, date | datetime):
        return value.isoformat()
    if value is None or isinstance(value, bool | int | float):
        return value
    return repr(value)


def fingerprint(value: Any, secrets: Iterable[str] = ()) -> str:
    """A short stable hash of records (dataclasses, patterns, sets in any order), with the
    fields that only say where a thing was read from left out and ``secrets`` replaced, so the
    hash can be written in a report without carrying a secret (a hash of a short secret could be
    guessed) and two machines with other checkout folders or tokens agree."""
    ordered = tuple(sorted((s for s in secrets if s), key=lambda s: (-len(s), s)))
    text = json.dumps(_canonical(value, ordered), sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def config_hash(config: Config, accepted: Sequence[AcceptedRule] = ()) -> str:
    """The hash of targets.yaml as loaded (targets, run settings, gates, compare rules) and of
    the accepted-differences entries."""
    return fingerprint((config, tuple(accepted)), config.secrets)


def config_gates(config: Config) -> tuple[tuple[str | None, GateThresholds], ...]:
    """Every gate of a config, the default first: a merge can judge any stage."""
    return ((None, config.default_gate), *config.stages)


def suites_hash(suites: Sequence[Any], secrets: Iterable[str] = ()) -> str:
    """The hash of the loaded suites (their requests, matrices, compare rules, tags)."""
    return fingerprint(tuple(suites), secrets)


# --------------------------------------------------------------------------------------------
# Checking and merging
# --------------------------------------------------------------------------------------------


def _differ(parts: Sequence[PartialRun], what: str, get: Any) -> None:
    first = parts[0]
    for part in parts[1:]:
        if get(part) != get(first):
            raise InputError(
                f"cannot merge: {part.label} and {first.label} {what} "
                f"({get(part)!r} vs {get(first)!r})"
            )


def check_parts(parts: Sequence[PartialRun]) -> None:
    """Refuse parts that cannot be one run (InputError, exit 2), naming the part at fault."""
    if not parts:
        raise InputError("cannot merge: no runs given")
    _differ(
        parts, "were made by different flamingo versions", lambda p: p.identity.flamingo_version
    )
    _differ(
        parts,
        "ran with different config (targets.yaml, accepted differences)",
        lambda p: p.identity.config_hash,
    )
    _differ(parts, "ran different suites", lambda p: p.identity.suites_hash)
    _differ(
        parts,
        "selected different cases (-k, --tag)",
        lambda p: (p.identity.keyword, p.identity.tags),
    )
    unsharded = [p for p in parts if p.identity.shard is None]
    if unsharded:
        if len(parts) > 1:
            raise InputError(
                f"cannot merge: {unsharded[0].label} ran every case; it cannot be merged with "
                f"{(parts[1] if parts[0] is unsharded[0] else parts[0]).label}"
            )
        return
    _differ(
        parts,
        "were split into different numbers of shards",
        lambda p: p.identity.shard and p.identity.shard[1],
    )
    n = parts[0].identity.shard[1]  # type: ignore[index]
    seen: dict[int, PartialRun] = {}
    for part in parts:
        k = part.identity.shard[0]  # type: ignore[index]
        if k in seen:
            raise InputError(
                f"cannot merge: shard {k}/{n} was given twice: {seen[k].source or '?'} and "
                f"{part.source or '?'}"
            )
        seen[k] = part
    missing = [k for k in range(1, n + 1) if k not in seen]
    if missing:
        names = ", ".join(f"{k}/{n}" for k in missing)
        have = ", ".join(f"{k}/{n}" for k in sorted(seen))
        plural = "s" if len(missing) > 1 else ""
        verb = "are" if len(missing) > 1 else "is"
        raise InputError(f"cannot merge: shard{plural} {names} {verb} missing (given: {have})")


def merge_accepted(reports: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
    """``accepted`` of gate.json over several parts: uses add up per entry; an entry is stale
    when no part used it; expired entries are listed once (each part judged expiry on its day)."""
    given = [r for r in reports if r is not None]
    if not given:
        return None
    entries: dict[int, dict[str, Any]] = {}
    used: dict[int, int] = {}
    expired: dict[int, dict[str, Any]] = {}
    for report in given:
        for row in report.get("used", []):
            entry = {k: v for k, v in row.items() if k != "differences"}
            entries.setdefault(row["entry"], entry)
            used[row["entry"]] = used.get(row["entry"], 0) + int(row["differences"])
        for row in report.get("stale", []):
            entries.setdefault(row["entry"], dict(row))
        for row in report.get("expired", []):
            expired.setdefault(row["entry"], dict(row))
    live = sorted(e for e in entries if e not in expired)
    return {
        "used": [{**entries[e], "differences": used[e]} for e in live if used.get(e)],
        "expired": [expired[e] for e in sorted(expired)],
        "stale": [entries[e] for e in live if not used.get(e)],
    }


def _span_s(started_at: str, finished_at: str) -> float | None:
    try:
        start = datetime.fromisoformat(started_at.replace("Z", "+00:00"))
        end = datetime.fromisoformat(finished_at.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, (end - start).total_seconds())


def _shard_order(part: PartialRun) -> int:
    return part.identity.shard[0] if part.identity.shard else 0


def merge_parts(parts: Sequence[PartialRun]) -> MergedRun:
    """Check the parts (`check_parts`), then add them up (see the module docstring)."""
    check_parts(parts)
    ordered = sorted(parts, key=_shard_order)
    tally = Tally()
    noise = NoiseModel()
    for part in ordered:
        tally.absorb(part.tally)
        noise.absorb(part.noise)
    reasons = []
    for part in ordered:
        if not part.complete:
            reasons.append(f"{part.label}: {part.reason or 'did not complete'}")
        elif part.judged != part.selected:
            reasons.append(f"{part.label}: judged {part.judged} of {part.selected} cases")
    started_at = min(p.started_at for p in ordered)
    finished_at = max(p.finished_at for p in ordered)
    span = _span_s(started_at, finished_at)
    first = ordered[0]
    return MergedRun(
        identity=dataclasses.replace(first.identity, shard=None),
        tally=tally,
        noise=noise,
        accepted=merge_accepted([p.accepted for p in ordered]),
        complete=not reasons,
        reason="; ".join(reasons),
        started_at=started_at,
        finished_at=finished_at,
        elapsed_s=span if span is not None else max(p.elapsed_s for p in ordered),
        gates=first.gates,
        targets=first.targets,
        settings=first.settings,
        parts=tuple(ordered),
    )


# --------------------------------------------------------------------------------------------
# partial.json <-> PartialRun (pure conversions)
# --------------------------------------------------------------------------------------------


def _thresholds_view(thresholds: GateThresholds) -> dict[str, Any]:
    """Every field of a gate (None included: a default is not always None), records as dicts."""
    return {f.name: _plain(getattr(thresholds, f.name)) for f in dataclasses.fields(thresholds)}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def part_view(part: PartialRun) -> dict[str, Any]:
    """A `PartialRun` as JSON data (partial.json)."""
    return {
        "format": PARTIAL_FORMAT,
        "run": part.identity.view(),
        "selected": part.selected,
        "complete": part.complete,
        "reason": part.reason,
        "started_at": part.started_at,
        "finished_at": part.finished_at,
        "elapsed_s": part.elapsed_s,
        "targets": dict(part.targets),
        "settings": dict(part.settings),
        "peak_rss_mb": part.peak_rss_mb,
        "gates": [{"stage": stage, "thresholds": _thresholds_view(t)} for stage, t in part.gates],
        "totals": {**dict(part.tally.counts), "accepted": part.tally.accepted},
        "fallbacks": {
            "configured": part.counts_fallbacks,
            "count": part.tally.fallbacks,
            "examples": list(part.tally.fallback_examples),
        },
        "errors": [dataclasses.asdict(e) for e in part.tally.errors],  # error signatures
        "latency": {
            target: {
                "histogram": state.histogram,
                "count": state.count,
                "sum_us": state.sum_us,
                "max_us": state.max_us,
            }
            for target, state in part.tally.latency
        },
        "signatures": [
            {
                "template": row.key[0],
                "kind": row.key[1],
                "location": row.key[2],
                "change": row.key[3],
                "count": row.count,
                "examples": list(row.examples),
                "example_change": row.example_change,
            }
            for row in part.tally.clusters
        ],
        "noise": {
            "samples": dict(part.noise.samples),
            "repeats": dict(part.noise.repeats),
            "observations": [dataclasses.asdict(o) for o in part.noise.stats],
        },
        "accepted": part.accepted,
    }


class _Reader:
    """Typed access to a parsed partial.json; any mismatch is an InputError naming the file."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, message: str) -> InputError:
        return InputError(message, self.source)

    def get(self, obj: Any, key: str, kind: Any, where: str = "") -> Any:
        if not isinstance(obj, dict) or key not in obj:
            raise self.fail(f"{where}{key}: missing (not a partial.json written by flamingo?)")
        value = obj[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if kind is int and isinstance(value, bool):
            raise self.fail(f"{where}{key}: expected an integer, got {value!r}")
        if not isinstance(value, kind):
            raise self.fail(f"{where}{key}: unexpected value {str(value)[:80]!r}")
        return value

    def count(self, obj: Any, key: str, where: str = "") -> int:
        value = self.get(obj, key, int, where)
        if value < 0:
            raise self.fail(f"{where}{key}: expected a count >= 0, got {value}")
        return int(value)

    def strings(self, obj: Any, key: str, where: str = "") -> tuple[str, ...]:
        values = self.get(obj, key, list, where)
        if not all(isinstance(v, str) for v in values):
            raise self.fail(f"{where}{key}: expected a list of strings")
        return tuple(values)


def _shard(reader: _Reader, text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    match = re.fullmatch(r"([0-9]+)/([0-9]+)", text)
    if match is None or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise reader.fail(f"run.shard: expected K/N, got {text!r}")
    return int(match.group(1)), int(match.group(2))


_GATE_FIELDS = {f.name for f in dataclasses.fields(GateThresholds)}


def _gates(reader: _Reader, rows: list[Any]) -> tuple[tuple[str | None, GateThresholds], ...]:
    gates: list[tuple[str | None, GateThresholds]] = []
    for row in rows:
        stage = reader.get(row, "stage", (str, type(None)), "gates[].")
        values = dict(reader.get(row, "thresholds", dict, "gates[]."))
        unknown = set(values) - _GATE_FIELDS
        if unknown:
            raise reader.fail(f"gates[].thresholds: unknown keys {sorted(unknown)}")
        try:
            regression = values.get("max_latency_regression")
            if regression is not None:
                values["max_latency_regression"] = LatencyRegression(**regression)
            values["resources"] = tuple(ResourceBound(**b) for b in values.get("resources", ()))
            gates.append((stage, GateThresholds(**values)))
        except TypeError as exc:
            raise reader.fail(f"gates[].thresholds: {exc}") from None
    if not gates or gates[0][0] is not None:
        raise reader.fail("gates: the default gate must come first")
    return tuple(gates)


def _variation(r: _Reader, data: dict[str, Any], where: str) -> dict[str, Any]:
    try:
        return Variation.from_view(data).view()
    except ValueError as exc:
        raise r.fail(f"{where}variation: {exc}") from None


def _error_row(r: _Reader, row: Any) -> ErrorRow:
    where = "errors[]."
    return ErrorRow(
        target=r.get(row, "target", str, where),
        kind=r.get(row, "kind", str, where),
        reason=r.get(row, "reason", str, where),
        count=r.count(row, "count", where),
        example=r.get(row, "example", str, where),
        message=r.get(row, "message", str, where),
    )


def part_from_view(view: Any, source: str = "") -> PartialRun:
    """partial.json's data -> `PartialRun`, checked field by field (InputError names the file)."""
    r = _Reader(source)
    fmt = r.get(view, "format", int)
    if fmt != PARTIAL_FORMAT:
        raise r.fail(f"format {fmt} is not the format this flamingo reads ({PARTIAL_FORMAT})")
    run = r.get(view, "run", dict)
    selection = r.get(run, "selection", dict, "run.")
    identity = RunIdentity(
        flamingo_version=r.get(run, "flamingo_version", str, "run."),
        config_hash=r.get(run, "config_hash", str, "run."),
        suites_hash=r.get(run, "suites_hash", str, "run."),
        keyword=r.get(selection, "k", (str, type(None)), "run.selection."),
        tags=r.strings(selection, "tags", "run.selection."),
        shard=_shard(r, r.get(run, "shard", (str, type(None)), "run.")),
    )
    totals = r.get(view, "totals", dict)
    counts = tuple((outcome, r.count(totals, outcome, "totals.")) for outcome in OUTCOMES)
    latency_view = r.get(view, "latency", dict)
    latency = []
    for target in ("old", "new"):
        lat = r.get(latency_view, target, dict, "latency.")
        where = f"latency.{target}."
        latency.append(
            (
                target,
                LatencyState(
                    r.get(lat, "histogram", str, where),
                    r.count(lat, "count", where),
                    r.count(lat, "sum_us", where),
                    r.count(lat, "max_us", where),
                ),
            )
        )
    clusters = []
    for row in r.get(view, "signatures", list):
        key = tuple(
            r.get(row, k, str, "signatures[].") for k in ("template", "kind", "location", "change")
        )
        clusters.append(
            TopRow(
                key,
                r.count(row, "count", "signatures[]."),
                r.strings(row, "examples", "signatures[]."),
                r.get(row, "example_change", str, "signatures[]."),
            )
        )
    fallbacks = r.get(view, "fallbacks", dict)
    noise_view = r.get(view, "noise", dict)
    samples = r.get(noise_view, "samples", dict, "noise.")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in samples.values()):
        raise r.fail("noise.samples: expected counts")
    observations = []
    for row in r.get(noise_view, "observations", list, "noise."):
        where = "noise.observations[]."
        observations.append(
            NoiseObservation(
                r.get(row, "template", str, where),
                r.get(row, "kind", str, where),
                r.get(row, "location", str, where),
                r.count(row, "differing", where),
                r.strings(row, "examples", where),
                r.get(row, "context", str, where),
                _variation(r, r.get(row, "variation", dict, where), where),
                r.strings(row, "shapes", where),
                r.count(row, "over_time", where),
                r.count(row, "timely", where),
                r.get(row, "time_shape", str, where),
                r.count(row, "lifetimes", where),
            )
        )
    repeats = r.get(noise_view, "repeats", dict, "noise.")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in repeats.values()):
        raise r.fail("noise.repeats: expected counts")
    accepted = r.get(view, "accepted", (dict, type(None)))
    if accepted is not None:
        for part in ("used", "expired", "stale"):
            for row in r.get(accepted, part, list, "accepted."):
                r.count(row, "entry", f"accepted.{part}[].")
                if part == "used":
                    r.count(row, "differences", "accepted.used[].")
    peak = view.get("peak_rss_mb")
    return PartialRun(
        identity=identity,
        tally=TallyState(
            counts=counts,
            accepted=r.count(totals, "accepted", "totals."),
            latency=tuple(latency),
            clusters=tuple(clusters),
            fallbacks=r.count(fallbacks, "count", "fallbacks."),
            fallback_examples=r.strings(fallbacks, "examples", "fallbacks."),
            errors=tuple(_error_row(r, row) for row in view.get("errors") or ()),
        ),
        noise=NoiseState(tuple(samples.items()), tuple(observations), tuple(repeats.items())),
        accepted=accepted,
        selected=r.count(view, "selected"),
        complete=r.get(view, "complete", bool),
        reason=r.get(view, "reason", str),
        started_at=r.get(view, "started_at", str),
        finished_at=r.get(view, "finished_at", str),
        elapsed_s=r.get(view, "elapsed_s", float),
        gates=_gates(r, r.get(view, "gates", list)),
        targets=r.get(view, "targets", dict),
        settings=r.get(view, "settings", dict),
        counts_fallbacks=r.get(fallbacks, "configured", bool, "fallbacks."),
        peak_rss_mb=float(peak)
        if isinstance(peak, int | float) and not isinstance(peak, bool)
        else None,
        source=source,
    )


# ============================================================================================
# Reading and writing (the edge): directories in, one run's files out
# ============================================================================================


def read_part(run_dir: Path) -> PartialRun:
    """A run folder's partial.json as a `PartialRun` (InputError when absent or malformed)."""
    path = run_dir / PARTIAL_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        hint = (
            " (its gate.json is there: was it written by an older flamingo?)"
            if (run_dir / "gate.json").exists()
            else " (is it a run's output folder? a shard that never ran leaves none)"
        )
        raise InputError(f"no {PARTIAL_FILE}{hint}", str(run_dir)) from None
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", str(path)) from None
    try:
        view = json.loads(text)
    except ValueError as exc:
        raise InputError(f"not valid JSON: {exc}", str(path)) from None
    part = part_from_view(view, str(run_dir))
    _check_histograms(part, str(path))
    return part


def _check_histograms(part: PartialRun, source: str) -> None:
    """Decode each histogram once: a corrupt one is bad input here, not a crash mid-merge."""
    from hdrh.histogram import HdrHistogram

    from flamingo.judge import HIGHEST_US, LOWEST_US, SIGNIFICANT_DIGITS

    for target, state in part.tally.latency:
        try:
            histogram = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
            histogram.decode_and_add(state.histogram)
        except Exception as exc:  # hdrh raises several unrelated types for bad input
            message = f"latency.{target}.histogram: cannot decode ({type(exc).__name__})"
            raise InputError(message, source) from None
        if histogram.get_total_count() != state.count:
            raise InputError(
                f"latency.{target}: the histogram holds {histogram.get_total_count()} samples, "
                f"count says {state.count}",
                source,
            )


def find_run_dirs(paths: Sequence[Path], skip: Path | None = None) -> list[Path]:
    """The run folders named: a folder with partial.json is one; a folder without it that
    holds run folders (a shared volume with one folder per shard) stands for all of them
    (except ``skip``: the merge's own output folder, when it is in there too)."""
    found: list[Path] = []
    skipped = skip.resolve() if skip is not None else None
    for path in paths:
        if not path.is_dir():
            raise InputError("not a folder", str(path))
        if (path / PARTIAL_FILE).exists() or (path / "gate.json").exists():
            found.append(path)
            continue
        inner = sorted(
            p
            for p in path.iterdir()
            if p.is_dir() and (p / PARTIAL_FILE).exists() and p.resolve() != skipped
        )
        if not inner:
            raise InputError(
                f"neither a run folder nor a folder of run folders (no {PARTIAL_FILE})", str(path)
            )
        found.extend(inner)
    return found


def _rows(run_dir: Path) -> Iterator[str]:
    path = run_dir / "results.jsonl"
    try:
        handle = open(path, encoding="utf-8")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", str(path)) from None
    with handle:
        yield from handle


def _run_dirs(paths: Sequence[Path], out: Path) -> list[Path]:
    """The run folders to merge; the output folder may be beside them, never one of them (its
    results.jsonl would be rewritten while it is read) nor a folder named to be merged."""
    found = find_run_dirs(paths, skip=out)
    for named in [*found, *paths]:
        if named.resolve() == out.resolve():
            raise InputError(
                "is one of the runs being merged; give the merge its own --out", str(out)
            )
    return found


def _count_rows(run_dir: Path) -> int:
    path = run_dir / "results.jsonl"
    count = 0
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                count += chunk.count(b"\n")
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", str(path)) from None
    return count


#: What junit.xml and report.html read from a results row, and the types they need.
_ROW_FIELDS = {
    "id": str,
    "suite": str,
    "name": str,
    "outcome": str,
    "method": str,
    "path": str,
    "differences": list,
    "failures": list,
    "old": dict,
    "new": dict,
}


def _row(line: str) -> dict[str, Any] | None:
    try:
        row = json.loads(line)
    except ValueError:
        return None
    if not isinstance(row, dict) or row.get("outcome") not in OUTCOMES:
        return None
    if any(not isinstance(row.get(key), kind) for key, kind in _ROW_FIELDS.items()):
        return None
    return row


def _settings(view: dict[str, Any]) -> RunSettings:
    """The run settings a part reported (for gate.json ``settings``; defaults where absent)."""
    from flamingo.report.gate import SETTINGS_FIELDS

    values = {
        field: view[key]
        for key, field in SETTINGS_FIELDS.items()
        if isinstance(view.get(key), int | float) and not isinstance(view.get(key), bool)
    }
    return RunSettings(**values)


def _signatures(run_dir: Path) -> list[dict[str, Any]]:
    """A run's full signature list (report.html's clusters), when it wrote one."""
    from flamingo.report.clusters import SIGNATURES_FILE

    path = run_dir / SIGNATURES_FILE
    if not path.exists():
        return []
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["signatures"]
        keys = ("id", "template", "kind", "location", "change", "count", "first", "last")
        if not isinstance(entries, list) or not all(
            isinstance(e, dict) and all(k in e for k in keys) for e in entries
        ):
            raise TypeError("not a list of signatures")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"cannot read: {exc}", str(path)) from None
    return entries


def _concatenate_evidence(run_dirs: Sequence[Path], out: Path) -> dict[str, Any] | None:
    """One evidence store from each run's, one gzip member after the other (each run kept its
    own size budget), and gate.json ``evidence`` summed over them; None when no run kept one."""
    import shutil

    from flamingo.report.evidence import FILE_NAME

    stores = [d / FILE_NAME for d in run_dirs if (d / FILE_NAME).exists()]
    if not stores:
        return None
    with open(out / FILE_NAME, "wb") as target:
        for store in stores:
            with open(store, "rb") as source:
                shutil.copyfileobj(source, target)
    summary: dict[str, Any] = {"file": FILE_NAME}
    for run_dir in run_dirs:
        try:
            shown = json.loads((run_dir / "gate.json").read_text(encoding="utf-8"))["evidence"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        for key in ("cases", "reduced", "omitted"):
            summary[key] = summary.get(key, 0) + int(shown.get(key) or 0)
        for key in ("body_bytes", "budget_bytes"):
            summary.setdefault(key, shown.get(key))
    summary["bytes"] = (out / FILE_NAME).stat().st_size
    return summary


def merge_dirs(paths: Sequence[Path], out: Path, stage: str | None, console: Any = None) -> int:
    """``flamingo merge``: read the runs in ``paths``, write one run's files to ``out``, print
    its summary; the exit code of the merged verdict (2 when the runs cannot be merged)."""
    from flamingo.engine import EXIT_CODES, TOP_DIFFERENCES, RunSummary
    from flamingo.process import peak_rss_mb
    from flamingo.report.clusters import latency_cdf
    from flamingo.report.files import RunFiles
    from flamingo.report.gate import gate_document
    from flamingo.report.redact import Redactor
    from flamingo.stagerun import fallback_view

    run_dirs = _run_dirs(paths, out)
    parts = [read_part(d) for d in run_dirs]
    merged = merge_parts(parts)
    gate = merged.gate(stage)  # an unknown stage is bad input before anything is written
    where = {part.source: Path(part.source) for part in merged.parts}
    for part in merged.parts:
        rows = _count_rows(where[part.source])
        if rows != part.judged:
            raise InputError(
                f"results.jsonl holds {rows} rows, its {PARTIAL_FILE} counts {part.judged} "
                "judged cases (a partial copy?)",
                part.source,
            )
    try:
        files = RunFiles(out, Redactor())  # every row and record was redacted by its run
    except OSError as exc:
        raise InputError(f"--out: cannot write to {out}: {exc.strerror}") from exc
    signatures = {part.source: _signatures(where[part.source]) for part in merged.parts}
    firsts = {str(e.get("first")) for entries in signatures.values() for e in entries}
    first_differences: dict[str, list[Any]] = {}  # the example case of each signature
    for part in merged.parts:
        for number, line in enumerate(_rows(where[part.source]), start=1):
            row = _row(line)
            if row is None:
                raise InputError(
                    "not a results row written by flamingo", f"{part.source}/results.jsonl", number
                )
            try:
                files.write_row(row, line)
            except (KeyError, TypeError, AttributeError, ValueError):
                raise InputError(
                    "a results row flamingo cannot read", f"{part.source}/results.jsonl", number
                ) from None
            if row["id"] in firsts:
                first_differences.setdefault(row["id"], row["differences"])
    for part in merged.parts:
        for entry in signatures[part.source]:
            files.index.absorb(entry, first_differences.get(str(entry["first"]), []))
    evidence = _concatenate_evidence([where[p.source] for p in merged.parts], out)
    whole = PartialRun(
        identity=merged.identity,
        tally=merged.tally.state(),
        noise=merged.noise.state(),
        accepted=merged.accepted,
        selected=sum(p.selected for p in merged.parts),
        complete=merged.complete,
        reason=merged.reason,
        started_at=merged.started_at,
        finished_at=merged.finished_at,
        elapsed_s=merged.elapsed_s,
        gates=merged.gates,
        targets=merged.targets,
        settings=merged.settings,
        peak_rss_mb=peak_rss_mb(),
        counts_fallbacks=merged.parts[0].counts_fallbacks,
    )
    targets = merged.targets
    summary = RunSummary(
        gate=gate,
        config=Config(
            path="",
            old=Target("old", str(targets.get("old", ""))),
            new=Target("new", str(targets.get("new", ""))),
        ),
        settings=_settings(merged.settings),
        started_at=merged.started_at,
        finished_at=merged.finished_at,
        elapsed_s=round(merged.elapsed_s, 3),
        latency={"old": merged.tally.latency("old"), "new": merged.tally.latency("new")},
        signatures=tuple(merged.tally.top(TOP_DIFFERENCES)),
        noise=tuple(merged.noise.entries()),
        accepted=merged.accepted,
        peak_rss_mb=whole.peak_rss_mb,
        out_dir=out,
        partial=whole,
        stage_rules={"fallback": fallback_view(merged.tally)} if whole.counts_fallbacks else {},
        errors=tuple(merged.tally.top_errors()),
    )
    document = gate_document(summary)  # the one builder of gate.json, as for any run
    if evidence is not None:
        document["evidence"] = evidence
    document["merged_from"] = [
        {
            "shard": part.identity.shard_text,
            "dir": part.source,
            "complete": part.complete,
            "totals": {**dict(part.tally.counts), "accepted": part.tally.accepted},
            "elapsed_s": part.elapsed_s,
            "peak_rss_mb": part.peak_rss_mb,
        }
        for part in merged.parts
    ]
    files.finish(
        gate, document, merged.started_at, latency_cdf(merged.tally), partial=part_view(whole)
    )
    if console is not None:
        from flamingo.report.console import print_summary

        print_summary(console, document, str(out))
    return EXIT_CODES[gate.verdict]
