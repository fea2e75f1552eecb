"""What report.html and ``flamingo compare`` need beyond gate.json, gathered while a run writes.

`ReportIndex` sees every case that did not match, already redacted, and keeps:

* the page's case list, streamed to ``.cases.part`` (one `html.case_row` per line), so a 100k-case
  run is never held in memory;
* every difference signature (bounded by `MAX_SIGNATURES`): its key, count, first and last case,
  and the first case's differences (for the side-by-side example) - written at the end as
  ``signatures.json``, the full list `flamingo compare` and ``--baseline`` read (gate.json keeps
  the top 20);
* transport errors grouped by (target, kind): count, first case, one message.

At the end it writes report.html from those, the gate document, the evidence store (the example
case of each signature is read back from it) and the latency CDF points.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from flamingo import __version__
from flamingo.judge import Tally
from flamingo.model import CaseResult, Config, Difference, Target
from flamingo.report import html
from flamingo.report.evidence import EvidenceLimits, find_evidence
from flamingo.report.redact import Redactor
from flamingo.report.rows import RowLines
from flamingo.report.sidebyside import side_by_side
from flamingo.signature import (
    SignatureKey,
    describe,
    example_change,
    generalize,
    signature_id,
    signature_key,
)

#: Distinct signatures tracked; the rest count into one "(other)" entry.
MAX_SIGNATURES = 10_000
SIGNATURES_FILE = "signatures.json"
_CASES_PART = ".cases.part"
#: Percentiles at which the latency CDF is drawn.
CDF_PERCENTILES = (
    0.1, 1, 2, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60, 65, 70, 75, 80, 85, 90, 92, 94, 95,
    96, 97, 98, 99, 99.5, 99.9, 99.99, 100,
)  # fmt: skip


@dataclass(frozen=True)
class ReportContext:
    """What the writers know of the run beyond its results."""

    targets: Mapping[str, Target] = field(default_factory=dict)  # "old", "new"
    evidence: EvidenceLimits = field(default_factory=EvidenceLimits)
    secret_names: Mapping[str, str] = field(default_factory=dict)  # secret value -> ${VAR} name
    baseline_run: str = ""  # --baseline RUN_DIR
    baseline: tuple[dict[str, Any], ...] | None = None  # its signatures (signatures.json)


def report_context(
    config: Config, baseline_run: Path | None = None, baseline: list[dict[str, Any]] | None = None
) -> ReportContext:
    """The writers' view of a run's config: its targets, evidence limits, secrets' names, and
    the baseline run's signatures (``--baseline``)."""
    wanted = set(config.secrets)
    names = {value: name for name, value in sorted(os.environ.items()) if value in wanted}
    limits = EvidenceLimits(config.run.evidence_bytes, config.run.evidence_max_bytes)
    return ReportContext(
        {"old": config.old, "new": config.new},
        limits,
        names,
        str(baseline_run or ""),
        tuple(baseline) if baseline is not None else None,
    )


def latency_cdf(tally: Tally) -> dict[str, list[tuple[float, float]]]:
    """Each target's latency CDF: (percentile, ms) at `CDF_PERCENTILES`."""
    return {
        target: [(p, us / 1000) for p in CDF_PERCENTILES if (us := tally.percentile_us(target, p))]
        for target in ("old", "new")
    }


class _Signature:
    __slots__ = ("count", "differences", "example_change", "first", "key", "last")

    def __init__(self, key: SignatureKey, first: str, change: str, diffs: list[Any]) -> None:
        self.key = key
        self.count = 0
        self.first = first
        self.last = first
        self.example_change = change
        self.differences = diffs


OTHER_KEY: SignatureKey = ("(other)", "(other)", "(other)", "(other)")


class ReportIndex:
    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.cases = 0
        self.signatures: dict[str, _Signature] = {}
        self._part: IO[str] = open(out_dir / _CASES_PART, "w", encoding="utf-8")  # noqa: SIM115

    def add_row(self, row: dict[str, Any], described: RowLines) -> None:
        """The page's line of one non-matching case, from its row alone (also a row another
        run wrote: `flamingo merge`) and its lines (`rows.describe_row`)."""
        ended = [
            f"{t}: connection ended {row[t]['ending']}"
            for t in ("old", "new")
            if row[t].get("ending")
        ]
        lines = [*described.errors, *ended, *described.findings]
        self._part.write(html.case_row(row, lines) + "\n")
        self.cases += 1

    def add_signatures(self, result: CaseResult, row: dict[str, Any], redactor: Redactor) -> None:
        """The difference signatures of one non-matching case (``redactor``: the case's own,
        `Redactor.for_case`)."""
        seen: set[str] = set()
        template = result.case.template
        # row["differences"] are result.differences redacted, in the same order.
        for raw, shown in zip(result.differences, row["differences"], strict=False):
            key = signature_key(template, raw)
            sid = signature_id(key)
            entry = self.signatures.get(sid)
            if entry is None:
                if len(self.signatures) >= MAX_SIGNATURES:
                    sid = signature_id(OTHER_KEY)
                    entry = self.signatures.get(sid)
                if entry is None:
                    shown_key = OTHER_KEY
                    if sid != signature_id(OTHER_KEY):  # shown: the redacted location
                        where = generalize(shown["location"])
                        shown_key = (redactor.text(key[0]), key[1], where, key[3])
                    change = example_change(
                        Difference(shown["kind"], shown["location"], shown["old"], shown["new"])
                    )
                    entry = self.signatures[sid] = _Signature(
                        shown_key, row["id"], change, row["differences"][:50]
                    )
            if sid in seen:
                continue
            seen.add(sid)
            entry.count += 1
            entry.last = row["id"]

    def absorb(self, entry: dict[str, Any], differences: list[Any]) -> None:
        """One signature of another run (a `SIGNATURES_FILE` entry) added to this index:
        counts add; the first case stays the first one seen (``differences``: that case's,
        for the side-by-side example), the last becomes this entry's (`flamingo merge`)."""
        sid = str(entry["id"])
        current = self.signatures.get(sid)
        if current is None:
            key: SignatureKey = (
                str(entry["template"]),
                str(entry["kind"]),
                str(entry["location"]),
                str(entry["change"]),
            )
            if len(self.signatures) >= MAX_SIGNATURES and sid != signature_id(OTHER_KEY):
                sid, key = signature_id(OTHER_KEY), OTHER_KEY
                current = self.signatures.get(sid)
            if current is None:
                current = self.signatures[sid] = _Signature(
                    key, str(entry["first"]), str(entry["example_change"]), differences[:50]
                )
        current.count += int(entry["count"])
        current.last = str(entry["last"])

    def flush(self) -> None:
        self._part.flush()

    def ranked(self, cases: int) -> list[dict[str, Any]]:
        """Every signature, most cases first (ties by key)."""
        ranked = sorted(self.signatures.items(), key=lambda kv: (-kv[1].count, kv[1].key))
        return [
            {
                "id": sid,
                "template": s.key[0],
                "kind": s.key[1],
                "location": s.key[2],
                "change": s.key[3],
                "description": describe(s.key),
                "count": s.count,
                "share": round(s.count / cases, 6) if cases else 0.0,
                "first": s.first,
                "last": s.last,
                "example_change": s.example_change,
            }
            for sid, s in ranked
        ]

    def annotate(self, doc: dict[str, Any], context: ReportContext) -> None:
        """What the gate document gets from the index: how many signatures there are in all
        (it lists the top ones) and, with ``--baseline``, how they compare with that run's."""
        doc["signature_count"] = len(self.signatures)
        if context.baseline is not None:
            from flamingo.report.baseline import compare_signatures

            cases = int(doc.get("totals", {}).get("cases", 0))
            current = self.ranked(cases)
            doc["baseline"] = compare_signatures(
                list(context.baseline), current, context.baseline_run
            )

    def _rows(self) -> Iterator[str]:
        with open(self.out_dir / _CASES_PART, encoding="utf-8") as part:
            for line in part:
                yield line.rstrip("\n")

    def finish(
        self,
        gate_doc: dict[str, Any],
        redactor: Redactor,
        context: ReportContext,
        latency_cdf: dict[str, list[tuple[float, float]]],
    ) -> None:
        """Write signatures.json and report.html (``gate_doc`` is the redacted gate document)."""
        self._part.close()
        cases = int(gate_doc.get("totals", {}).get("cases", 0))
        clusters = self.ranked(cases)
        # The full list for `flamingo compare` / --baseline (gate.json keeps the top ones only).
        write_atomic(
            self.out_dir / SIGNATURES_FILE,
            json.dumps({"cases": cases, "signatures": clusters}, ensure_ascii=False, indent=1),
        )
        wanted = {c["first"] for c in clusters[: html.MAX_EXAMPLES]}
        records = find_evidence(self.out_dir, wanted)
        for cluster in clusters[: html.MAX_EXAMPLES]:
            record = records.get(cluster["first"])
            if record is not None:
                diffs = self.signatures[cluster["id"]].differences
                cluster["view"] = side_by_side(record, diffs)
            else:
                cluster["missing"] = (
                    "no evidence kept for this example (evidence store full or off)"
                )
        page = html.Page(
            gate=gate_doc,
            clusters=clusters,
            errors=gate_doc["errors"],
            latency_cdf=latency_cdf,
            evidence=gate_doc.get("evidence"),
            version=__version__,
        )
        path = self.out_dir / "report.html"
        tmp = path.with_name("report.html.tmp")
        with open(tmp, "w", encoding="utf-8") as out:
            html.write_page(out, page, self._rows(), self.cases)
        os.replace(tmp, path)
        (self.out_dir / _CASES_PART).unlink(missing_ok=True)


def write_atomic(path: Path, text: str) -> None:
    """``text`` and a newline into ``path``, whole or not at all (a reader never sees half)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, path)
