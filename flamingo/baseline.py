"""Recorded baselines: one target's responses on disk, and a response source that replays them.

A baseline stands in for a live ``old`` target that is switched off or must not take the load.
It is a *source of responses behind the send seam*: `RecordingTransport` wraps a live transport
and stores every exchange it returns; `ReplayTransport` answers from the store. The Sender, the
judge, noise learning, expect and the gate never know which one they talk to.

On disk (``BASELINE/``)::

    baseline.json          what was recorded: target, config hash, suites, time, counts
                           (written last: a directory without it is not a baseline)
    index.jsonl.gz         one line per recorded exchange: request key, request, exchange
    objects/ab/abcd...gz   bodies, gzip-compressed, named by the SHA-256 of their bytes

Bodies are content-addressed, so the same body recorded a thousand times is stored once and the
index grows by one short line per exchange. An exchange is keyed by its request (method, path,
headers, body, raw bytes) - not by case id - so a send worker, which only sees a `WireRequest`,
can replay too, and a renamed case still finds its response. Every answer recorded for a key is
kept; replay hands them out in turn, so ``old`` and the noise-learning second ``old`` of one case
get two answers recorded at the same moment (``flamingo record`` asks its target twice per case
for exactly that), and repeats (``#1``, ``#2``) get their own.

A request that was never recorded is answered with a `TransportError` of kind ``not-recorded``:
the case is an ``error`` with that reason, never a match.

A baseline holds responses as the target sent them (Set-Cookie values, echoed headers): it is as
sensitive as the target's traffic, and its files are created readable by their owner only.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flamingo import __version__
from flamingo.engine import (
    EXIT_HARNESS,
    Observer,
    RunOptions,
    RunStart,
    RunSummary,
    Selection,
    Session,
    timestamp,
)
from flamingo.errors import InputError
from flamingo.model import (
    Exchange,
    ForwardedRequest,
    Headers,
    Response,
    RunSettings,
    Target,
    TransportError,
    UpstreamView,
)
from flamingo.send import Request, Transport, TransportFactory
from flamingo.upstream import TOKEN_HEADER, TOKEN_RE

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "FORMAT",
    "Baseline",
    "BaselineInfo",
    "BaselineWriter",
    "RecordingTransport",
    "ReplayTransport",
    "request_key",
]

FORMAT = 1
_TOKEN_HEADER = TOKEN_HEADER.lower()
INFO = "baseline.json"
INDEX = "index.jsonl.gz"
OBJECTS = "objects"


def request_key(request: Request) -> str:
    """What identifies a request in a baseline: everything that is sent, nothing else - except
    the upstream token (`flamingo.upstream`), which is new for every exchange."""
    raw = getattr(request, "raw", None)
    raw_data: bytes | None = getattr(raw, "data", None)
    if raw_data is not None:
        raw_data = TOKEN_RE.sub(b"{{ token }}", raw_data)
    headers = [list(pair) for pair in request.headers if pair[0].lower() != _TOKEN_HEADER]
    parts = [
        request.method,
        request.path,
        headers,
        None if request.body is None else hashlib.sha256(request.body).hexdigest(),
        None if raw_data is None else hashlib.sha256(raw_data).hexdigest(),
    ]
    text = json.dumps(parts, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class BaselineInfo:
    """``baseline.json``: where a recording came from."""

    target: str  # the target's name in targets.yaml
    base_url: str  # as configured (secrets redacted)
    config_hash: str  # SHA-256 over targets.yaml and the suite files
    suites: tuple[tuple[str, str], ...]  # (file, SHA-256)
    started_at: str
    finished_at: str
    cases: int
    exchanges: int
    objects: int
    stored_bytes: int
    format: int = FORMAT
    flamingo: str = __version__

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "flamingo": self.flamingo,
            "target": self.target,
            "base_url": self.base_url,
            "config_hash": self.config_hash,
            "suites": [{"file": f, "sha256": s} for f, s in self.suites],
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "cases": self.cases,
            "exchanges": self.exchanges,
            "objects": self.objects,
            "stored_bytes": self.stored_bytes,
        }


def file_hashes(paths: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """(file, SHA-256) of each file, sorted by name."""
    hashes = []
    for path in sorted(set(paths)):
        with open(path, "rb") as handle:
            hashes.append((path, hashlib.file_digest(handle, "sha256").hexdigest()))
    return tuple(hashes)


def config_hash(targets_file: str, suite_files: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for name, sha in file_hashes([targets_file, *suite_files]):
        digest.update(f"{Path(name).name}\0{sha}\n".encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Encoding exchanges (explicit, so the file format does not follow every field rename)
# --------------------------------------------------------------------------------------------


def _headers(value: Any) -> Headers:
    return tuple((str(name), str(text)) for name, text in value)


class _Objects:
    """Bodies by SHA-256, gzip-compressed, one file each."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.written = 0
        self.stored_bytes = 0

    def path(self, sha: str) -> Path:
        return self.root / sha[:2] / f"{sha}.gz"

    def put(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        path = self.path(sha)
        if not path.exists():
            path.parent.mkdir(mode=0o700, exist_ok=True)
            packed = gzip.compress(data, compresslevel=6, mtime=0)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(packed)
            os.replace(tmp, path)
            self.written += 1
            self.stored_bytes += len(packed)
        return sha

    def get(self, sha: str) -> bytes:
        try:
            data = gzip.decompress(self.path(sha).read_bytes())
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise InputError(f"baseline object {sha} is missing or damaged: {exc}") from None
        if hashlib.sha256(data).hexdigest() != sha:
            raise InputError(f"baseline object {sha} is damaged (its content does not match)")
        return data


def _encode_forwarded(item: ForwardedRequest, objects: _Objects) -> dict[str, Any]:
    return {
        "request_line": item.request_line,
        "headers": [list(p) for p in item.headers],
        "body": objects.put(item.body),
        "framing": item.framing,
        "complete": item.complete,
        "body_size": item.body_size,
        "body_sha256": item.body_sha256,
        "connection_seq": item.connection_seq,
        "notes": list(item.notes),
    }


def _decode_forwarded(data: dict[str, Any], objects: _Objects) -> ForwardedRequest:
    return ForwardedRequest(
        request_line=data["request_line"],
        headers=_headers(data["headers"]),
        body=objects.get(data["body"]),
        framing=data["framing"],
        complete=data["complete"],
        body_size=data["body_size"],
        body_sha256=data["body_sha256"],
        connection_seq=data["connection_seq"],
        notes=tuple(data["notes"]),
    )


def encode_exchange(exchange: Exchange, objects: _Objects) -> dict[str, Any]:
    if isinstance(exchange, TransportError):
        return {
            "error": exchange.kind,
            "message": exchange.message,
            "latency_ms": exchange.latency_ms,
            "attempts": exchange.attempts,
        }
    data: dict[str, Any] = {
        "status": exchange.status,
        "reason": exchange.reason,
        "headers": [list(p) for p in exchange.headers],
        "body": objects.put(exchange.body),
        "latency_ms": exchange.latency_ms,
        "body_size": exchange.body_size,
        "body_sha256": exchange.body_sha256,
        "attempts": exchange.attempts,
    }
    if exchange.ending:
        data["ending"] = exchange.ending
    if exchange.more:
        data["more"] = [encode_exchange(more, objects) for more in exchange.more]
    if exchange.upstream is not None:
        data["upstream"] = {
            "requests": [_encode_forwarded(r, objects) for r in exchange.upstream.requests],
            "untokened": exchange.upstream.untokened,
        }
    return data


def decode_exchange(data: dict[str, Any], objects: _Objects) -> Exchange:
    if "error" in data:
        return TransportError(
            kind=data["error"],
            message=data["message"],
            latency_ms=data["latency_ms"],
            attempts=data["attempts"],
        )
    upstream = data.get("upstream")
    return Response(
        status=data["status"],
        reason=data["reason"],
        headers=_headers(data["headers"]),
        body=objects.get(data["body"]),
        latency_ms=data["latency_ms"],
        body_size=data["body_size"],
        body_sha256=data["body_sha256"],
        attempts=data["attempts"],
        ending=data.get("ending", ""),
        more=tuple(decode_exchange(m, objects) for m in data.get("more", ())),  # type: ignore[misc]
        upstream=None
        if upstream is None
        else UpstreamView(
            requests=tuple(_decode_forwarded(r, objects) for r in upstream["requests"]),
            untokened=upstream["untokened"],
        ),
    )


# --------------------------------------------------------------------------------------------
# Recording
# --------------------------------------------------------------------------------------------


class BaselineWriter:
    """Writes one baseline into a fresh directory beside ``out``; `commit` puts it in place.

    Until `commit`, an existing baseline at ``out`` is untouched: a recording that is interrupted
    or fails leaves the previous one (and never a half-written one) behind.
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        # Replacing a directory is how a baseline is refreshed: never one that is not a baseline.
        baseline = out.is_dir() and not out.is_symlink() and (out / INFO).is_file()
        if out.exists() and not baseline and (not out.is_dir() or any(out.iterdir())):
            raise InputError("exists and is not a baseline (refusing to replace it)", str(out))
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(
                f"cannot create the baseline: {exc.strerror or exc}", str(out)
            ) from None
        self.work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        (self.work / OBJECTS).mkdir(mode=0o700)
        self.objects = _Objects(self.work / OBJECTS)
        fd = os.open(self.work / INDEX, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._raw = os.fdopen(fd, "wb")
        self._index = gzip.GzipFile(fileobj=self._raw, mode="wb", mtime=0)
        self.exchanges = 0
        self.keys: set[str] = set()

    def add(self, request: Request, exchange: Exchange, role: str) -> None:
        key = request_key(request)
        line = {
            "key": key,
            "role": role,
            "request": {
                "method": request.method,
                "path": request.path,
                "headers": [list(p) for p in request.headers],
                "body": None if request.body is None else self.objects.put(request.body),
            },
            "exchange": encode_exchange(exchange, self.objects),
        }
        self._index.write(json.dumps(line, ensure_ascii=False).encode("utf-8", "surrogatepass"))
        self._index.write(b"\n")
        self.exchanges += 1
        self.keys.add(key)

    def commit(self, info: BaselineInfo) -> BaselineInfo:
        """Write ``baseline.json`` and move the recording to ``out`` (replacing an older one)."""
        self._index.close()  # GzipFile leaves a file object it was given open
        self._raw.close()
        info = replace(
            info,
            exchanges=self.exchanges,
            objects=self.objects.written,
            stored_bytes=self.objects.stored_bytes + (self.work / INDEX).stat().st_size,
        )
        fd = os.open(self.work / INFO, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(info.as_dict(), handle, indent=2)
            handle.write("\n")
        old = None
        if self.out.exists():
            old = self.out.with_name(f".{self.out.name}.replaced.{os.getpid()}")
            os.replace(self.out, old)
        os.replace(self.work, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return info

    def abandon(self) -> None:
        with contextlib.suppress(Exception):
            self._index.close()
            self._raw.close()
        shutil.rmtree(self.work, ignore_errors=True)


class RecordingTransport:
    """A live transport whose every answer is also stored (``role`` says which target asked)."""

    def __init__(self, inner: Transport, writer: BaselineWriter, role: str) -> None:
        self.inner = inner
        self.writer = writer
        self.role = role

    async def send(self, case: Request) -> Exchange:
        exchange = await self.inner.send(case)
        self.writer.add(case, exchange, self.role)
        return exchange

    async def aclose(self) -> None:
        await self.inner.aclose()


def recording_factory(
    inner: TransportFactory, writer: BaselineWriter, names: Iterable[str]
) -> TransportFactory:
    """``inner``, but the transports of the targets in ``names`` record what they receive."""
    recorded = frozenset(names)

    def factory(target: Target, settings: RunSettings) -> Transport:
        transport = inner(target, settings)
        if target.name in recorded:
            return RecordingTransport(transport, writer, target.name)
        return transport

    return factory


# --------------------------------------------------------------------------------------------
# Replaying
# --------------------------------------------------------------------------------------------


@dataclass
class Baseline:
    """A recorded baseline, read back."""

    path: Path
    info: dict[str, Any]
    entries: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # key -> exchanges

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Baseline:
        root = Path(path)
        where = str(root / INFO)
        try:
            info = json.loads((root / INFO).read_text(encoding="utf-8"))
        except FileNotFoundError:
            problem = "no such directory" if not root.exists() else "no baseline.json in it"
            raise InputError(
                f"not a baseline ({problem}; record one with `flamingo record`)", str(root)
            ) from None
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read the baseline: {exc}", where) from None
        if not isinstance(info, dict) or info.get("format") != FORMAT:
            found = info.get("format") if isinstance(info, dict) else None
            raise InputError(f"unsupported baseline format {found!r} (expected {FORMAT})", where)
        baseline = cls(root, info)
        index = root / INDEX
        try:
            with gzip.open(index, "rt", encoding="utf-8", errors="surrogatepass") as handle:
                for number, line in enumerate(handle, start=1):
                    try:
                        entry = json.loads(line)
                        baseline.entries.setdefault(entry["key"], []).append(entry["exchange"])
                    except (ValueError, KeyError, TypeError) as exc:
                        raise InputError(f"damaged index line: {exc}", str(index), number) from None
        except (OSError, EOFError) as exc:
            raise InputError(f"cannot read the baseline index: {exc}", str(index)) from None
        return baseline

    @property
    def span(self) -> tuple[float, float] | None:
        """When the recording was made, in epoch seconds (None when baseline.json lacks it)."""
        try:
            start = datetime.fromisoformat(str(self.info["started_at"]).replace("Z", "+00:00"))
            end = datetime.fromisoformat(str(self.info["finished_at"]).replace("Z", "+00:00"))
        except (KeyError, ValueError):
            return None
        return start.timestamp(), end.timestamp()

    @property
    def target(self) -> str:
        return str(self.info.get("target", "?"))

    def describe(self) -> str:
        return (
            f"{self.path} (target {self.target} {self.info.get('base_url', '')}, recorded "
            f"{self.info.get('finished_at', '?')}, {self.info.get('cases', '?')} cases)"
        )


class ReplayTransport:
    """Answers from one or more `Baseline`\\s: the recorded exchanges of a request, in turn.

    With several recordings, their answers to one request alternate (first of each, then second
    of each, ...): ``old`` and its noise twin then get answers recorded at different times, the
    volatility evidence that only several recordings have.
    """

    def __init__(self, baselines: Sequence[Baseline]) -> None:
        self.baselines = list(baselines)
        self.objects = [_Objects(b.path / OBJECTS) for b in self.baselines]
        self._turn: dict[str, int] = {}
        self._answers: dict[str, list[tuple[int, dict[str, Any]]]] = {}

    def _recorded(self, key: str) -> list[tuple[int, dict[str, Any]]]:
        answers = self._answers.get(key)
        if answers is None:
            lists = [b.entries.get(key, []) for b in self.baselines]
            answers = [
                (which, answers_of[turn])
                for turn in range(max(map(len, lists), default=0))
                for which, answers_of in enumerate(lists)
                if turn < len(answers_of)
            ]
            self._answers[key] = answers
        return answers

    async def send(self, case: Request) -> Exchange:
        key = request_key(case)
        recorded = self._recorded(key)
        if not recorded:
            where = ", ".join(str(b.path) for b in self.baselines)
            return TransportError(
                "not-recorded",
                f"not in the baseline {where}: no recorded response to {case.method} {case.path}",
                0.0,
            )
        turn = self._turn.get(key, 0)
        self._turn[key] = turn + 1
        which, exchange = recorded[turn % len(recorded)]
        return decode_exchange(exchange, self.objects[which])

    async def aclose(self) -> None:
        return None


def replay_factory(
    inner: TransportFactory, baselines: Sequence[Baseline], names: Iterable[str]
) -> TransportFactory:
    """``inner``, but the targets in ``names`` are answered from ``baselines``."""
    replayed = frozenset(names)
    replay = ReplayTransport(baselines)  # one for old and its noise twin: they share the turns

    def factory(target: Target, settings: RunSettings) -> Transport:
        if target.name in replayed:
            return replay
        return inner(target, settings)

    return factory


# --------------------------------------------------------------------------------------------
# Attaching a baseline to a session (what `flamingo record`, `run --old`, `--record-old` do)
# --------------------------------------------------------------------------------------------


class BaselineRecorder(Observer):
    """Commits the recording when the run judged every selected case; abandons it otherwise
    (interrupted, crashed): a baseline never holds a partial recording."""

    def __init__(self, writer: BaselineWriter, session: Session, target: Target) -> None:
        self.writer = writer
        self.session = session
        self.target = target
        self.total = -1
        self.started_at = ""
        self.info: BaselineInfo | None = None

    def started(self, run: RunStart) -> None:
        self.total = run.total
        self.started_at = timestamp()

    def finished(self, summary: RunSummary) -> None:
        cases = summary.gate.totals.cases
        if cases != self.total:
            self.writer.abandon()
            return
        config = self.session.config
        suite_files = sorted({suite.file for suite in self.session.suites})
        self.info = self.writer.commit(
            BaselineInfo(
                target=self.target.name,
                base_url=self.session.redactor.config_text(self.target.base_url),
                config_hash=config_hash(config.path, suite_files),
                suites=file_hashes(suite_files),
                started_at=self.started_at,
                finished_at=timestamp(),
                cases=cases,
                exchanges=0,
                objects=0,
                stored_bytes=0,
            )
        )


def _as(target: Target, name: str) -> Target:
    return replace(target, name=name)


def record_target(session: Session, name: str, out: Path) -> BaselineRecorder:
    """Make ``session`` a recording run of one target: it is asked as ``old`` *and* as ``new``
    (and again for noise learning), so every case is recorded at least twice at the same moment
    - the old-vs-old evidence a replay learns noise from - and the run's own report shows how
    the target differs from itself."""
    config = session.config
    targets = {"old": config.old, "new": config.new}
    if config.old_replica is not None:
        targets["old_replica"] = config.old_replica
    if name not in targets:
        raise InputError(f"--target: unknown target {name!r} (targets: {', '.join(targets)})")
    target = targets[name]
    session.config = replace(
        config, old=_as(target, "old"), new=_as(target, "new"), old_replica=None
    )
    writer = BaselineWriter(out)
    session.transport_factory = recording_factory(
        session.transport_factory, writer, ("old", "new", "old_replica")
    )
    return BaselineRecorder(writer, session, target)


def record_old(session: Session, out: Path) -> BaselineRecorder:
    """Make ``session`` (a normal two-target run) also record what ``old`` answers."""
    writer = BaselineWriter(out)
    session.transport_factory = recording_factory(
        session.transport_factory, writer, ("old", "old_replica")
    )
    return BaselineRecorder(writer, session, session.config.old)


def replay_old(session: Session, paths: Sequence[Path]) -> list[Baseline]:
    """Make ``session`` judge ``new`` against recordings: ``old`` (and its noise twin) answer
    from the baselines; everything after the send seam is unchanged."""
    baselines = [Baseline.open(path) for path in paths]
    config = session.config
    shown = ",".join(str(path) for path in paths)
    old = replace(config.old, base_url=f"baseline:{shown}", headers=())
    session.config = replace(config, old=old, old_replica=None)
    session.transport_factory = replay_factory(session.transport_factory, baselines, ("old",))
    # Timestamps the recordings hold are timestamps of "now" for them (noise that sees time).
    session.time_spans.extend(span for b in baselines if (span := b.span) is not None)
    return baselines


def baseline_run(
    session: Session,
    selection: Selection,
    options: RunOptions,
    console: Console,
    args: Any,
    observer: Observer,
) -> tuple[int, RunSummary]:
    """The command-line door of ``record``, ``run --old`` and ``run --record-old``: attach the
    baseline to the session, run it through the one engine (``observer``: the caller's console
    display, so ``--quiet``/``--json`` hold here too), say what was recorded. Returns the exit
    code and the run's summary."""
    observers: list[Observer] = [observer]
    recorder: BaselineRecorder | None = None
    recording = args.command == "record"
    if recording:
        recorder = record_target(session, args.target, Path(args.out))
    else:
        if args.old is not None and args.record_old is not None:
            raise InputError("--old and --record-old exclude each other (there is no live old)")
        if args.old is not None:
            suite_files = sorted({suite.file for suite in session.suites})
            expected = config_hash(session.config.path, suite_files)
            for baseline in replay_old(session, [Path(p) for p in args.old]):
                console.print(f"old: the baseline {baseline.describe()}", highlight=False)
                if baseline.info.get("config_hash") != expected:
                    console.print(
                        f"old: {baseline.path} was recorded with other targets/suites files; "
                        "requests it never saw are errors ('not-recorded')",
                        highlight=False,
                    )
        if args.record_old is not None:
            recorder = record_old(session, Path(args.record_old))
    if recorder is not None:
        # The recording is written by the judging process: send from it too.
        options = replace(options, workers=1)
        observers.append(recorder)
    try:
        summary = session.run(selection, options, observers).wait()
    finally:
        if recorder is not None and recorder.info is None:
            recorder.writer.abandon()
    if recorder is not None:
        if recorder.info is None:
            console.print(
                f"baseline: NOT written to {recorder.writer.out} (the run did not judge every "
                "case; an earlier baseline there is kept)",
                highlight=False,
            )
            return EXIT_HARNESS, summary
        info = recorder.info
        console.print(
            f"baseline: {info.cases} cases, {info.exchanges} responses of "
            f"{info.target} recorded in {recorder.writer.out} ({info.objects} distinct bodies, "
            f"{info.stored_bytes / 1024:.1f} KiB stored)",
            highlight=False,
        )
        if recording:
            console.print(
                "record: the comparison above is the target against itself (the evidence a "
                "replay learns noise from); the recording is what counts",
                highlight=False,
            )
            return 0, summary
    return summary.exit_code, summary
