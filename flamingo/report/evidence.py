"""The evidence store: what a person needs to judge a case that did not match.

For every case whose outcome is not ``match`` (and for a match that only matched through accepted
differences), `EvidenceWriter` appends one record to ``evidence.jsonl.gz`` beside results.jsonl:
both requests as flamingo sent them (method, URL, the headers it set, the body) and both exchanges
(status, reason, headers, body; or the transport error), plus a ready ``curl`` command per target.
Plain matches keep nothing here.

Bounds (tested in tests/test_evidence.py, measured by bench/report.py):

* a body is kept up to ``evidence_bytes`` (``run.evidence_bytes``, default 64 KiB); a longer one
  keeps that head, its full size and the SHA-256 of what flamingo received;
* a message's headers are kept up to `MAX_HEADER_BYTES` (the rest is cut, and says so);
* the file as a whole: records are written with full bodies while the compressed file is under
  half of ``budget`` (default `DEFAULT_BUDGET`), with bodies cut to `REDUCED_BODY_BYTES` under
  the whole budget, and not at all beyond it (the case is still in results.jsonl and report.html;
  ``omitted`` counts it). So the file never exceeds ``budget`` + one record, and one record is at
  most ~4 x (``evidence_bytes`` + `MAX_HEADER_BYTES`) before compression.

The file is a gzip stream flushed (sync flush) every `FLUSH_EVERY` records, so an interrupted
run keeps what it wrote; `read_evidence` reads a stream that was cut short.

Redaction is structural: every header value, URL and body is passed through the run's
`Redactor` (with the case's own credential values) before the record is serialized. A ``curl``
command is built from the unredacted request with each secret replaced by a shell variable
(``${NEW_TOKEN}``, or ``${AUTHORIZATION}`` for a credential header of unknown origin): it never
contains a secret's value.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import shlex
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from flamingo.model import (
    Case,
    CaseResult,
    Exchange,
    ForwardedRequest,
    Headers,
    Response,
    Target,
)
from flamingo.report.redact import REDACTED, Redactor
from flamingo.send import merge_headers

FILE_NAME = "evidence.jsonl.gz"
DEFAULT_EVIDENCE_BYTES = 64 * 1024
#: The compressed size of the whole store at which evidence stops being written.
DEFAULT_BUDGET = 256 * 1024 * 1024
#: Bodies kept per side once the store is past half of its budget.
REDUCED_BODY_BYTES = 4 * 1024
#: Header bytes (names + values) kept per message.
MAX_HEADER_BYTES = 16 * 1024
FLUSH_EVERY = 64
#: gzip level: evidence is written on the judging process's path; level 1 is ~4x faster than 6
#: and within ~15% of its size on HTTP bodies (bench/report.py).
COMPRESS_LEVEL = 1


@dataclass(frozen=True)
class EvidenceLimits:
    body_bytes: int = DEFAULT_EVIDENCE_BYTES
    budget: int = DEFAULT_BUDGET


def wants_evidence(result: CaseResult) -> bool:
    """A case worth evidence: anything but a plain match (accepted differences included)."""
    return result.outcome != "match" or bool(result.accepted)


# -- bodies and headers ---------------------------------------------------------------------


def body_view(
    body: bytes, size: int, sha256: str, limit: int, redactor: Redactor
) -> dict[str, Any]:
    """A body as evidence: text (UTF-8, else Latin-1 so every byte survives), its full size, and
    the SHA-256 of the whole when only a head is kept."""
    full = size if size >= 0 else len(body)
    view: dict[str, Any] = {"bytes": full}
    head = body[:limit]
    if len(head) < full:
        view["truncated"] = True
        # The SHA-256 of everything flamingo received: send's own when the body was streamed
        # past max_body_bytes, else of the body it holds.
        view["sha256"] = sha256 or hashlib.sha256(body).hexdigest()
        if len(body) < full and not sha256:
            view["note"] = "body not kept by the run (held for noise learning)"
    try:
        text = head.decode("utf-8")
        view["encoding"] = "utf-8"
    except UnicodeDecodeError as exc:
        if exc.start >= len(head) - 3 and len(head) < full:  # a character cut by the limit
            text = head[: exc.start].decode("utf-8")
            view["encoding"] = "utf-8"
        else:
            text = head.decode("latin-1")
            view["encoding"] = "latin-1"
    if not view.get("truncated"):
        redacted = _json_redacted(text, redactor)
        if redacted is not None:
            view["text"] = redacted
            return view
    view["text"] = redactor.fragment(text) if view.get("truncated") else redactor.text(text)
    return view


def _json_redacted(text: str, redactor: Redactor) -> str | None:
    """A whole JSON body with its values redacted as data (`Redactor.value`: whatever sits under
    a secret-carrying header's name, a value that is a short secret) and written again; None
    when it is not a JSON object or array, or when nothing in it needed redacting."""
    if not text.lstrip().startswith(("{", "[")):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    redacted = redactor.value(data)
    return None if redacted == data else json.dumps(redacted, ensure_ascii=False)


def headers_view(headers: Headers, redactor: Redactor) -> list[list[str]]:
    """Headers in wire order, values redacted (credential headers blanked), cut at
    `MAX_HEADER_BYTES`."""
    out: list[list[str]] = []
    used = 0
    for name, value in headers:
        used += len(name) + len(value)
        if used > MAX_HEADER_BYTES:
            out.append(["…", f"{len(headers) - len(out)} more header(s) cut (evidence limit)"])
            break
        secret = name.lower() in redactor.secret_headers
        shown = REDACTED if secret and value else redactor.text(value)
        out.append([redactor.text(name), shown])
    return out


def forwarded_view(request: ForwardedRequest, limit: int, redactor: Redactor) -> dict[str, Any]:
    """One request a proxy forwarded to the recording origin (``upstream:``)."""
    return {
        "request_line": redactor.text(request.request_line),
        "headers": headers_view(request.headers, redactor),
        "body": body_view(request.body, request.body_size, request.body_sha256, limit, redactor),
        "framing": request.framing,
        "complete": request.complete,
    }


def exchange_view(exchange: Exchange, limit: int, redactor: Redactor) -> dict[str, Any]:
    if isinstance(exchange, Response):
        view: dict[str, Any] = {
            "status": exchange.status,
            "reason": redactor.text(exchange.reason),
            "headers": headers_view(exchange.headers, redactor),
            "body": body_view(
                exchange.body, exchange.body_size, exchange.body_sha256, limit, redactor
            ),
            "latency_ms": round(exchange.latency_ms, 3),
            "attempts": exchange.attempts,
        }
        if exchange.ending:  # a raw exchange: how the connection ended, later responses
            view["ending"] = exchange.ending
        if exchange.more:
            view["more"] = [exchange_view(r, REDUCED_BODY_BYTES, redactor) for r in exchange.more]
        if exchange.upstream is not None:
            view["upstream"] = {
                "requests": [
                    forwarded_view(r, limit, redactor) for r in exchange.upstream.requests[:8]
                ],
                "untokened": exchange.upstream.untokened,
            }
        return view
    return {
        "error": exchange.kind,
        "message": redactor.text(exchange.message),
        "latency_ms": round(exchange.latency_ms, 3),
        "attempts": exchange.attempts,
    }


def request_view(case: Case, target: Target, limit: int, redactor: Redactor) -> dict[str, Any]:
    """The request flamingo sent to ``target`` for ``case`` (the HTTP client adds Host and, where
    the request has none, Accept, Accept-Encoding and framing headers)."""
    if case.raw is not None:  # byte-exact: these bytes, nothing added
        return {
            "method": "RAW",
            "url": redactor.config_text(target.base_url),
            "headers": [],
            "body": body_view(case.raw.data, -1, "", limit, redactor),
        }
    headers = tuple(merge_headers(case.headers, target.headers))
    view: dict[str, Any] = {
        "method": case.method,
        "url": redactor.config_text(target.base_url) + redactor.text(case.path),
        "headers": headers_view(headers, redactor),
    }
    if case.body is not None:
        view["body"] = body_view(case.body, -1, "", limit, redactor)
    return view


# -- curl -----------------------------------------------------------------------------------

_VAR_NAME = re.compile(r"[^A-Z0-9_]+")


def _shell_word(text: str, secrets: Mapping[str, str]) -> str:
    """``text`` as one shell word, every secret value in it replaced by ``"${VAR}"``."""
    if secrets:
        pattern = "|".join(re.escape(s) for s in sorted(secrets, key=len, reverse=True))
        pieces = re.split(f"({pattern})", text)
    else:
        pieces = [text]
    out = []
    for index, piece in enumerate(pieces):
        if index % 2:
            out.append(f'"${{{secrets[piece]}}}"')
        elif piece:
            out.append(_quote(piece))
    return "".join(out) or "''"


def _quote(text: str) -> str:
    if text.isprintable():
        return shlex.quote(text)
    # Control characters: ANSI-C quoting, which bash, zsh and ksh read back byte for byte.
    escaped = "".join(
        c if c.isprintable() and c not in "\\'" else f"\\x{ord(c):02x}" if ord(c) < 256 else c
        for c in text
    )
    return f"$'{escaped}'"


def curl_command(
    case: Case, target: Target, secret_names: Mapping[str, str], redactor: Redactor
) -> str:
    """A shell command that sends the case's request to ``target`` as flamingo did.

    Secrets never appear: a value flamingo substituted from ``${VAR}`` becomes ``"${VAR}"``, any
    other credential header value becomes ``"${HEADER_NAME}"`` (e.g. ``${COOKIE}``), and whatever
    else the run's redactor knows as secret becomes ``"${FLAMINGO_SECRET_N}"``.
    """
    names = dict(secret_names)
    # Secrets the redactor knows that hold no named one ("Bearer ${TOKEN}" as a whole does).
    # (Short ones are not searched for in text: the header they were put in is named whole.)
    long_secrets = redactor.secrets - redactor.short
    unnamed = [s for s in long_secrets if not any(known in s for known in secret_names)]
    for number, secret in enumerate(sorted(unnamed), 1):
        names[secret] = f"FLAMINGO_SECRET_{number}"
    headers = merge_headers(case.headers, target.headers)
    for name, value in headers:
        # The whole value, unless a part of it (the token after the scheme) is already known.
        credential = name.lower() in redactor.secret_headers and value and value not in names
        if credential and not any(secret in value for secret in names):
            names[value] = _VAR_NAME.sub("_", name.upper())
    if case.raw is not None:
        return _raw_command(case.raw.data, target, names)
    words = ["curl", "-sS", "-i", "--compressed", "--path-as-is", "-X", case.method]
    words.append(_shell_word(target.base_url + case.path, names))
    for name, value in headers:
        words += ["-H", _shell_word(f"{name}: {value}", names)]
    if case.body is not None:
        try:
            text = case.body.decode("utf-8")
        except UnicodeDecodeError:
            text = case.body.decode("latin-1")
        words += ["--data-binary", _shell_word(text, names)]
    if not target.verify_tls:
        words.append("-k")
    if target.http2:
        words.append("--http2")
    return " ".join(words)


def _raw_command(data: bytes, target: Target, names: Mapping[str, str]) -> str:
    """A byte-exact request as a shell pipeline: the bytes into ``nc`` (``openssl s_client``
    for https), on a fresh connection, as flamingo sent them."""
    parts = urlsplit(target.base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname or ""
    sink = (
        f"openssl s_client -quiet -connect {shlex.quote(f'{host}:{port}')}"
        if parts.scheme == "https"
        else f"nc {shlex.quote(host)} {port}"
    )
    return f"printf '%s' {_shell_word(data.decode('latin-1'), names)} | {sink}"


# -- the store ------------------------------------------------------------------------------


def evidence_record(
    result: CaseResult,
    targets: Mapping[str, Target],
    body_bytes: int,
    redactor: Redactor,
    secret_names: Mapping[str, str],
) -> dict[str, Any]:
    """One case's evidence, every value already redacted (``redactor`` includes the case's own
    credential values)."""
    case = result.case
    record: dict[str, Any] = {"id": redactor.text(case.id), "outcome": result.outcome}
    for side, exchange in (("old", result.old), ("new", result.new)):
        target = targets[side]
        record[side] = {
            "request": request_view(case, target, body_bytes, redactor),
            "response": exchange_view(exchange, body_bytes, redactor),
            "curl": curl_command(case, target, secret_names, redactor),
        }
    return record


class EvidenceWriter:
    """Appends evidence records to ``evidence.jsonl.gz`` within a size budget."""

    def __init__(
        self,
        out_dir: Path,
        targets: Mapping[str, Target],
        redactor: Redactor,
        limits: EvidenceLimits = EvidenceLimits(),
        secret_names: Mapping[str, str] | None = None,
    ) -> None:
        self.path = out_dir / FILE_NAME
        self.targets = dict(targets)
        self.redactor = redactor
        self.limits = limits
        self.secret_names = dict(secret_names or {})
        self._raw: IO[bytes] = open(self.path, "wb")  # noqa: SIM115 - closed by `close`
        self._gzip = gzip.GzipFile(
            filename="", mode="wb", fileobj=self._raw, compresslevel=COMPRESS_LEVEL, mtime=0
        )
        self.written = 0
        self.reduced = 0  # records whose bodies were cut to REDUCED_BODY_BYTES
        self.omitted = 0  # cases with no record: the store had reached its budget
        self._pending = 0

    @property
    def size(self) -> int:
        """Compressed bytes written so far (what reached the file, plus what zlib holds)."""
        return self._raw.tell()

    def write(self, result: CaseResult, redactor: Redactor) -> None:
        """One case's record, redacted by ``redactor`` (the run's, plus the case's own
        credentials: `Redactor.for_case`)."""
        size = self.size
        if size >= self.limits.budget:
            self.omitted += 1
            return
        limit = self.limits.body_bytes
        if size >= self.limits.budget // 2:
            limit = min(limit, REDUCED_BODY_BYTES)
            self.reduced += 1
        record = evidence_record(result, self.targets, limit, redactor, self.secret_names)
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        self._gzip.write(line.encode("utf-8", "surrogatepass"))
        self.written += 1
        self._pending += 1
        if self._pending >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        self._pending = 0
        self._gzip.flush()  # a sync flush: everything so far is readable from the file
        self._raw.flush()

    def close(self) -> None:
        if not self._raw.closed:
            self._gzip.close()
            self._raw.close()

    def summary(self) -> dict[str, Any]:
        return {
            "file": FILE_NAME,
            "cases": self.written,
            "reduced": self.reduced,
            "omitted": self.omitted,
            "bytes": self.path.stat().st_size if self.path.exists() else 0,
            "body_bytes": self.limits.body_bytes,
            "budget_bytes": self.limits.budget,
        }


def read_evidence(run_dir: Path) -> Iterator[dict[str, Any]]:
    """Every record of a run's evidence store, in the order written; tolerates a stream that an
    interrupted run cut short (its last, partial line is dropped)."""
    path = run_dir / FILE_NAME
    if not path.exists():
        return
    decompressor = zlib.decompressobj(wbits=31)  # gzip header
    pending = b""
    with open(path, "rb") as raw:
        chunk = raw.read(1 << 16)
        while chunk:
            try:
                data = decompressor.decompress(chunk)
            except zlib.error:
                break
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield json.loads(line)
            if decompressor.eof:
                # Stores written one after the other (`flamingo merge` appends each shard's) are
                # one gzip member each: go on with the next one.
                chunk = decompressor.unused_data
                decompressor = zlib.decompressobj(wbits=31)
                if chunk:
                    continue
            chunk = raw.read(1 << 16)


def find_evidence(run_dir: Path, ids: set[str]) -> dict[str, dict[str, Any]]:
    """The records of the given case ids (one pass over the store)."""
    found: dict[str, dict[str, Any]] = {}
    if not ids:
        return found
    for record in read_evidence(run_dir):
        if record.get("id") in ids and record["id"] not in found:
            found[record["id"]] = record
            if len(found) == len(ids):
                break
    return found
