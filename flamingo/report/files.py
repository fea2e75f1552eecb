"""The files of a run's output folder (CONTRACT §6).

``results.jsonl`` and the test cases of ``junit.xml`` are streamed as cases finish, so a crash or
an interrupt loses nothing already judged; ``gate.json`` and ``report.html`` are written once the
verdict is known (also when it is ``error``). The records they are written from are redacted
before they get here (`flamingo.report.redact`); nothing here rewrites what it serialized.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import IO, Any
from xml.sax.saxutils import escape, quoteattr

from flamingo.errors import InputError
from flamingo.merge import PARTIAL_FILE
from flamingo.model import CaseResult, GateResult, Totals
from flamingo.report.clusters import SIGNATURES_FILE, ReportContext, ReportIndex, write_atomic
from flamingo.report.evidence import FILE_NAME as EVIDENCE_FILE
from flamingo.report.evidence import EvidenceWriter, wants_evidence
from flamingo.report.redact import Redactor
from flamingo.report.rows import RowLines, describe_row, result_line

# XML 1.0 forbids most control characters, even escaped; bodies can contain them.
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_FLUSH_EVERY = 256  # rows; a crash loses at most this many rows' *buffer*, never the verdict


def _xml(text: str) -> str:
    return escape(_XML_ILLEGAL.sub("\ufffd", text))


#: Anything `_xml_attr` would change: XML-illegal characters and what quoteattr escapes.
_XML_ATTR_SPECIAL = re.compile('[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff&<>"\n\r\t]')


def _xml_attr(text: str) -> str:
    if _XML_ATTR_SPECIAL.search(text) is None:  # the common case: quoteattr would only quote
        return f'"{text}"'
    return quoteattr(_XML_ILLEGAL.sub("\ufffd", text))


def _junit_seconds(old_ms: float | None, new_ms: float | None) -> float:
    """A test case's time: the slower side's (rounded) latency, in seconds."""
    return max(old_ms or 0.0, new_ms or 0.0) / 1000.0


class RunFiles:
    """Streams results.jsonl and junit.xml; writes gate.json and report.html at the end."""

    def __init__(
        self, out_dir: Path, redactor: Redactor, context: ReportContext | None = None
    ) -> None:
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        self._results: IO[str] = open(out_dir / "results.jsonl", "w", encoding="utf-8")  # noqa: SIM115
        self._junit_part_path = out_dir / ".junit.xml.part"
        self._junit_part: IO[str] = open(self._junit_part_path, "w", encoding="utf-8")  # noqa: SIM115
        self._pending = 0
        self.counts = {"tests": 0, "failures": 0, "errors": 0}
        self.redactor = redactor  # for the evidence store and the page's index
        self.context = context or ReportContext()
        self.index = ReportIndex(out_dir)  # the page's case list, signatures and errors
        self.evidence: EvidenceWriter | None = None
        if self.context.targets:
            self.evidence = EvidenceWriter(
                out_dir,
                self.context.targets,
                redactor,
                self.context.evidence,
                self.context.secret_names,
            )

    def write(self, result: CaseResult) -> None:
        line, row = result_line(result)
        self._results.write(line)
        self._results.write("\n")
        if row is None:
            # A plain match (`rows.result_line`): a passing test case is all it adds; no
            # evidence, signature or page row.
            seconds = _junit_seconds(
                round(result.old.latency_ms, 3), round(result.new.latency_ms, 3)
            )
            self._write_testcase(result.case.suite, result.case.name, seconds, "match", None)
            self._count_row()
            return
        evidence = self.evidence if wants_evidence(result) else None
        if evidence is not None or result.outcome != "match":
            redactor = self.redactor.for_case(result)  # the case's own credentials, once
            if evidence is not None:
                evidence.write(result, redactor)
            if result.outcome != "match":
                self.index.add_signatures(result, row, redactor)
        self._keep(row)

    def write_row(self, row: dict[str, Any], line: str) -> None:
        """A case another run judged and wrote (`flamingo merge`): its results.jsonl ``line``
        as written there (already redacted), the rest from its parsed ``row``."""
        self._results.write(line if line.endswith("\n") else line + "\n")
        self._keep(row)

    def _keep(self, row: dict[str, Any]) -> None:
        if row["outcome"] == "match":
            self._write_junit_case(row, None)
        else:
            lines = describe_row(row)  # once, for junit and the page
            self._write_junit_case(row, lines)
            self.index.add_row(row, lines)
        self._count_row()

    def _count_row(self) -> None:
        self._pending += 1
        if self._pending >= _FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        self._pending = 0
        self._results.flush()
        self._junit_part.flush()
        self.index.flush()
        if self.evidence is not None:
            self.evidence.flush()

    def _write_junit_case(self, row: dict[str, Any], lines: RowLines | None) -> None:
        seconds = _junit_seconds(row["old"].get("latency_ms"), row["new"].get("latency_ms"))
        self._write_testcase(row["suite"], row["name"], seconds, row["outcome"], lines)

    def _write_testcase(
        self, suite: str, name: str, seconds: float, outcome: str, lines: RowLines | None
    ) -> None:
        """One junit test case; ``lines`` (`rows.describe_row`) for one that did not match."""
        self.counts["tests"] += 1
        head = (
            f"    <testcase classname={_xml_attr(suite)} name={_xml_attr(name)}"
            f' time="{seconds:.6f}"'
        )
        if lines is None:
            self._junit_part.write(head + " />\n")
            return
        if outcome == "error":
            self.counts["errors"] += 1
            tag = "error"
            said = [*lines.errors, *lines.findings]
        else:
            self.counts["failures"] += 1
            tag = "failure"
            said = list(lines.findings)
        message = f"{outcome}: " + (said[0] if said else outcome)
        detail = "\n".join(said)
        text = (
            f"{head}>\n      <{tag} type={_xml_attr(outcome)} message={_xml_attr(message)}>"
            f"{_xml(detail)}</{tag}>\n    </testcase>\n"
        )
        self._junit_part.write(text)

    def finish(
        self,
        gate: GateResult,
        gate_doc: dict[str, Any],
        started_at: str,
        latency_cdf: dict[str, list[tuple[float, float]]] | None = None,
        partial: dict[str, Any] | None = None,
    ) -> None:
        """Close the streams and write the verdict files; safe to call after an interrupt.

        Everything is written as given: the results and ``gate_doc`` are already redacted
        (`flamingo.report.redact`) - no secret is searched for in a finished document.
        ``partial`` (`flamingo.merge.part_view`, built from the records) is redacted like the
        gate document and written as partial.json.
        """
        self.flush()
        self._results.close()
        self._junit_part.close()
        if self.evidence is not None:
            self.evidence.close()
            gate_doc["evidence"] = self.evidence.summary()
        self.index.annotate(gate_doc, self.context)
        self._write_junit(gate, started_at)
        if partial is not None:
            # The encoded histograms hold no target data, and redacting text inside one
            # (a short secret that happens to be base64) would corrupt it: kept as they are.
            latency = partial.pop("latency", None)
            redacted_partial = self.redactor.gate(partial)
            if latency is not None:
                partial["latency"] = redacted_partial["latency"] = latency
            write_atomic(self.out_dir / PARTIAL_FILE, json.dumps(redacted_partial, indent=1))
        write_atomic(self.out_dir / "gate.json", json.dumps(gate_doc, indent=2))
        # Everything on the page is already redacted: the gate document, each case row and
        # each evidence record (as they were written); nothing rewrites the finished page.
        self.index.finish(gate_doc, self.redactor, self.context, latency_cdf or {})

    def _write_junit(self, gate: GateResult, started_at: str) -> None:
        path = self.out_dir / "junit.xml"
        tmp = path.with_suffix(".xml.tmp")
        with open(tmp, "w", encoding="utf-8") as out:
            out.write('<?xml version="1.0" encoding="UTF-8"?>\n')
            attrs = (
                f'tests="{self.counts["tests"]}" failures="{self.counts["failures"]}"'
                f' errors="{self.counts["errors"]}" skipped="0"'
            )
            out.write(f"<testsuites {attrs}>\n")
            out.write(
                f'  <testsuite name="flamingo" {attrs} timestamp={_xml_attr(started_at)}>\n'
                f"    <properties>\n"
                f'      <property name="verdict" value={_xml_attr(gate.verdict)} />\n'
                f'      <property name="stage" value={_xml_attr(gate.stage or "default")} />\n'
                f"    </properties>\n"
            )
            with open(self._junit_part_path, encoding="utf-8") as part:
                shutil.copyfileobj(part, out)
            out.write("  </testsuite>\n</testsuites>\n")
        os.replace(tmp, path)
        self._junit_part_path.unlink(missing_ok=True)


#: Every file a run may leave in its --out folder (the partial.json of `flamingo.merge`, the
#: crash.log of a crashed run, and the temporary names of files being written included).
RUN_FILES: tuple[str, ...] = (
    "gate.json",
    "results.jsonl",
    "junit.xml",
    "report.html",
    EVIDENCE_FILE,
    SIGNATURES_FILE,
    "crash.log",
    "partial.json",
    ".junit.xml.part",
    ".cases.part",
    *(f"{name}.tmp" for name in ("gate.json", "report.html", "junit.xml", SIGNATURES_FILE)),
    "partial.json.tmp",
)


def prepare_out_dir(out_dir: Path, *, force: bool) -> None:
    """Make sure nothing in ``out_dir`` can be read as this run's result before it has one.

    A folder that holds anything is refused (`InputError`): a stale ``gate.json`` there would
    still say ``pass`` after this run stopped on bad input. With ``force`` flamingo's own files
    (`RUN_FILES`) are removed at once - before the inputs are even read - and anything else
    is left alone.
    """
    try:
        entries = sorted(entry.name for entry in out_dir.iterdir())
    except FileNotFoundError:
        return
    except NotADirectoryError:
        raise InputError(f"--out: {out_dir} exists and is not a folder") from None
    except OSError as exc:
        raise InputError(f"--out: cannot read {out_dir}: {exc.strerror}") from None
    if not entries:
        return
    if not force:
        more = f" and {len(entries) - 5} more" if len(entries) > 5 else ""
        shown = ", ".join(entries[:5]) + more
        raise InputError(
            f"--out: {out_dir} is not empty ({shown}); a run writes into a new or empty folder, "
            "or pass --force to replace flamingo's files in it"
        )
    for name in RUN_FILES:
        try:
            (out_dir / name).unlink(missing_ok=True)
        except OSError as exc:
            raise InputError(f"--out: cannot remove {out_dir / name}: {exc.strerror}") from None


def write_unrun(out_dir: Path, stage: str | None, reason: str) -> None:
    """The files of a run stopped before it began (told to stop while loading): verdict
    ``error``, no case judged, and why - as every interrupted run leaves them."""
    from datetime import UTC, datetime

    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    gate = GateResult("error", stage, Totals(), (), reason)
    doc: dict[str, Any] = {
        "verdict": gate.verdict,
        "stage": stage,
        "totals": gate.totals.as_dict(),
        "checks": [],
        "started_at": now,
        "finished_at": now,
        "reason": reason,
        "errors": [],  # every gate document has its error signatures (`gate.gate_document`)
    }
    RunFiles(out_dir, Redactor()).finish(gate, doc, now)
