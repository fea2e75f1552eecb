"""The records that flow through the pipeline.

Every stage takes and returns these plain, frozen values; none of them does IO. Headers are kept
as tuples of ``(name, value)`` pairs in wire order and case (normalization decides what counts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

from multidict import CIMultiDict

from flamingo.regex import Regex

# --------------------------------------------------------------------------------------------
# Configuration (targets.yaml)
# --------------------------------------------------------------------------------------------

Headers = tuple[tuple[str, str], ...]


def header_values(headers: Headers, name: str) -> list[str]:
    """Every value of header ``name`` in order, the name matched case-insensitively (multidict's
    `CIMultiDict`, as aiohttp matches them). Headers stay tuples of pairs everywhere else: they
    keep the order and the spelling a target sent, and cost nothing to pickle or hash."""
    return CIMultiDict(headers).getall(name, [])


#: What every output shows in place of a secret (`flamingo.report.redact`).
REDACTED = "[REDACTED]"


@dataclass(frozen=True)
class Target:
    """One system under test: ``old`` (production today) or ``new`` (the replacement)."""

    name: str
    base_url: str  # scheme://host[:port][/prefix], no trailing slash
    headers: Headers = ()
    verify_tls: bool = True
    production: bool = False
    http2: bool = False
    fallback: FallbackRule | None = None  # how a hand-off to the old system shows (stage rules)
    metrics_url: str | None = None  # Prometheus text, scraped before and after a run


@dataclass(frozen=True)
class FallbackRule:
    """How a target shows that it handed a request to the old system (CONTRACT §3 ``fallback:``):
    a response header (any value, or exactly ``value``), or a status code."""

    header: str | None = None  # lower-case
    value: str | None = None  # None: the header's presence is the sign
    status: int | None = None


#: Upper bounds of `RunSettings`: what sizes a run's allocations (sending tasks, processes) or
#: how long one request may keep it busy. A larger value is an input error, in targets.yaml and
#: on the command line alike (README, "targets.yaml").
RUN_LIMITS: dict[str, float] = {
    "concurrency": 10_000,
    "workers": 64,
    "retries": 100,
    "timeout": 86_400.0,  # seconds: one day
}
#: The slowest pace `rate_limit` may set (requests/second per target) other than 0, "unpaced":
#: below it the pause between two requests outgrows any run (1e-320 would be an endless one).
MIN_RATE = 0.001
#: What a send-worker count may be (`worker_count`), said alike by every front door.
WORKERS_EXPECTED = "expected 'auto' or an integer >= 1"


def worker_count(value: object) -> int:
    """A send-worker count: ``auto`` (stored as 0: `flamingo.workers.plan` decides) or a process
    count >= 1; `ValueError` (`WORKERS_EXPECTED`) otherwise.

    The one check of it: targets.yaml ``run.workers``, ``--workers`` and `RunOptions.workers`
    all come through here; each door first reads its own text (a ``${VAR}``, an argument) and
    says where the value was. The upper bound is `RUN_LIMITS`, as for every run setting."""
    if isinstance(value, str) and value.strip() == "auto":
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(WORKERS_EXPECTED)
    return value


@dataclass(frozen=True)
class RunSettings:
    concurrency: int = 200  # requests in flight at once, across both targets
    rate_limit: float = 0.0  # max requests/second per target, 0 = unlimited
    timeout: float = 10.0  # seconds per request (send to last byte)
    retries: int = 1  # transport errors only
    max_body_bytes: int = 10 * 1024 * 1024  # larger bodies are compared by hash
    evidence_bytes: int = 64 * 1024  # body bytes kept per side in the evidence store
    evidence_max_bytes: int = 256 * 1024 * 1024  # compressed size of the whole evidence store
    max_cases: int = 1_000_000  # expansion guard, checked at load time
    max_requests: int = 0  # cap on requests sent by one run, 0 = no cap
    workers: int = 0  # processes that send (flamingo.workers); 1 = in the judging one; 0 = auto


@dataclass(frozen=True)
class GateThresholds:
    """Thresholds of one gate. ``None`` means the check is not evaluated.

    Gates fail closed (CONTRACT §3): the defaults below are the gate a file gets for every key it
    does not set - every case must match, no case may be an error, at least one case must run -
    so a ``diff``, ``fail`` or ``error`` passes only where a threshold written in the file allows
    its rate. This is the one place those defaults live: the loader starts every gate (the
    default, and each stage before it inherits the default's keys) from ``GateThresholds()``.
    """

    min_match_rate: float | None = 1.0
    max_error_rate: float | None = 0.0
    min_cases: int | None = 1
    max_latency_ratio_p50: float | None = None
    max_latency_ratio_p99: float | None = None
    # Stage rules (CONTRACT §3), evaluated by flamingo.stage:
    max_fallback_rate: float | None = None
    max_new_signatures: int | None = None  # signatures not in the --baseline run's
    max_latency_regression: LatencyRegression | None = None
    resources: tuple[ResourceBound, ...] = ()
    min_duration: float | None = None  # seconds; the run repeats its selection in rounds


@dataclass(frozen=True)
class LatencyRegression:
    """Fail when new is slower than old with significance ``p`` (one-sided Mann-Whitney U) AND
    the mean latency ratio new/old exceeds ``effect`` (Kayenta's classifier: both must hold)."""

    p: float
    effect: float


@dataclass(frozen=True)
class ResourceBound:
    """A bound over one scraped metric: a gauge by its value after the run, a counter by its
    rate over the run (per second). ``metric`` is a sample name with optional labels."""

    metric: str
    max_ratio_new_to_old: float | None = None
    max_new: float | None = None


GATE_KEYS: tuple[str, ...] = (
    "min_match_rate",
    "max_error_rate",
    "min_cases",
    "max_latency_ratio_p50",
    "max_latency_ratio_p99",
    "max_fallback_rate",
    "max_new_signatures",
)


@dataclass(frozen=True)
class Mask:
    pattern: Regex  # RE2: linear time (flamingo.regex)
    replace: str  # as written
    template: tuple[str | int, ...] = ()  # ``replace`` parsed: literal text and group indices

    @classmethod
    def of(cls, pattern: str, replace: str) -> Mask:
        """A mask from its two strings (`flamingo.regex.RegexError` when either is invalid)."""
        compiled = Regex(pattern)
        return cls(compiled, replace, compiled.template(replace))

    def apply(self, text: str) -> str:
        return self.pattern.sub(self.template, text)


@dataclass(frozen=True)
class CompareRules:
    """How responses are normalized before they are compared (a suite's ``compare:``)."""

    ignore_headers: frozenset[str] = frozenset()  # lower-case names
    ignore_json_paths: tuple[str, ...] = ()  # JSONPath expressions, validated at load time
    mask: tuple[Mask, ...] = ()
    noise: bool | None = None  # learn noise from old-vs-old (None: inherit, default off)
    noise_threshold: float | None = None  # share of old-vs-old samples (None: inherit)

    def over(self, defaults: CompareRules) -> CompareRules:
        """These rules on top of ``defaults`` (targets.yaml ``compare:``): lists add up,
        scalars set here win."""
        return CompareRules(
            ignore_headers=defaults.ignore_headers | self.ignore_headers,
            ignore_json_paths=tuple(
                dict.fromkeys(defaults.ignore_json_paths + self.ignore_json_paths)
            ),
            mask=defaults.mask + self.mask,
            noise=self.noise if self.noise is not None else defaults.noise,
            noise_threshold=(
                self.noise_threshold
                if self.noise_threshold is not None
                else defaults.noise_threshold
            ),
        )


@dataclass(frozen=True)
class UpstreamSettings:
    """``upstream:`` of targets.yaml: flamingo's recording origin (`flamingo.upstream`)."""

    host: str
    port: int  # 0: any free port (tests; the proxies under test need a fixed one)
    status: int = 200
    headers: Headers = (("Content-Type", "text/plain"),)
    body: bytes = b"flamingo origin\n"


#: The name ``--stage`` gives ``gates.default`` (so no stage may be called that).
DEFAULT_STAGE = "default"


@dataclass(frozen=True)
class Config:
    """A loaded targets.yaml."""

    path: str
    old: Target
    new: Target
    run: RunSettings = RunSettings()
    default_gate: GateThresholds = GateThresholds()
    stages: tuple[tuple[str, GateThresholds], ...] = ()  # already merged over default_gate
    secrets: tuple[str, ...] = ()  # values substituted from ${VAR}: redacted in every output
    # every string a ${VAR} value was substituted into, and how it is shown: ("Bearer s3cr3t",
    # "Bearer [REDACTED]") - a secret too short to be found in free text is found by its field
    secret_fields: tuple[tuple[str, str], ...] = ()
    old_replica: Target | None = None  # a second instance of old, for noise learning
    compare: CompareRules = CompareRules()  # defaults under every suite's compare:
    accepted_path: str | None = None  # accepted.yaml, resolved against targets.yaml's folder
    upstream: UpstreamSettings | None = None  # run the recording origin; compare what was forwarded

    def gate(self, stage: str | None) -> GateThresholds:
        if stage is None or stage == DEFAULT_STAGE:  # CONTRACT §3: --stage default
            return self.default_gate
        for name, thresholds in self.stages:
            if name == stage:
                return thresholds
        raise KeyError(stage)


# --------------------------------------------------------------------------------------------
# Suites and cases
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeaderExpect:
    name: str  # lower-case
    equals: str | None = None
    regex: Regex | None = None
    absent: bool = False


@dataclass(frozen=True)
class Expect:
    """Assertions that must hold on BOTH targets' responses."""

    status: tuple[int, ...] = ()  # empty = not checked
    headers: tuple[HeaderExpect, ...] = ()
    json: Any = None  # subset the JSON body must contain; None = not checked
    has_json: bool = False  # distinguishes "json: null" from "no json expectation"
    upstream_headers: tuple[HeaderExpect, ...] = ()  # on the request the proxy forwarded

    @property
    def empty(self) -> bool:
        return (
            not self.status and not self.headers and not self.has_json and not self.upstream_headers
        )


#: What ``{{ token }}`` in a raw request is while the case is built (``flamingo.raw`` puts the
#: exchange's upstream token, or `NO_TOKEN`, in its place just before sending).
TOKEN_SENTINEL = "\ue000flamingo-token\ue000".encode()
#: The stand-in token when no recording origin runs: as long as a real one (25 characters).
NO_TOKEN = b"flamingo-0000000000000000"


@dataclass(frozen=True)
class RawRequest:
    """Bytes sent as they are on a fresh connection (``raw:``, ``raw_b64:``, ``raw_chunks:``).

    ``parts`` are sent in order; a float between them is a pause in seconds. ``idle`` is how
    long the connection may stay quiet after a complete response before the exchange counts
    as ended with the connection ``open``; ``timeout`` bounds the whole exchange (None: the
    run's timeout).
    """

    parts: tuple[bytes | float, ...]
    idle: float = 0.3
    timeout: float | None = None

    @property
    def data(self) -> bytes:
        return b"".join(part for part in self.parts if isinstance(part, bytes))


@dataclass(frozen=True)
class Case:
    """One fully expanded request, sent once to each target."""

    id: str  # suite::name[#k], unique and stable between runs
    suite: str
    name: str
    template: str  # suite::<request name before substitution>: what noise and signatures key on
    method: str
    path: str  # path with the encoded query string, appended to a target's base_url
    headers: Headers = ()
    body: bytes | None = None
    expect: Expect = Expect()
    compare: CompareRules = CompareRules()
    tags: tuple[str, ...] = ()
    source: str = ""  # FILE:LINE of the request in its suite, for messages
    allow_side_effects: bool = False  # the suite allows non-idempotent methods on production
    raw: RawRequest | None = None  # byte-exact: sent instead of method/path/headers/body


# --------------------------------------------------------------------------------------------
# Exchanges (what send returns)
# --------------------------------------------------------------------------------------------

ErrorKind = Literal[
    "connect", "timeout", "reset", "tls", "protocol", "refused-by-policy", "not-recorded"
]


@dataclass(frozen=True)
class ForwardedRequest:
    """One request as the recording origin (`flamingo.upstream`) received it from a proxy.

    The case's token is already replaced by ``{{ token }}`` everywhere it appeared (it differs
    per target, so it must not count as a difference); its header is dropped.
    """

    request_line: str
    headers: Headers  # in order and case, as received
    body: bytes
    framing: str  # "content-length: N" | "chunked" | "none"
    complete: bool = True
    body_size: int = -1
    body_sha256: str = ""
    connection_seq: int = 1  # 1: the first request on its connection; k: the k-th (reuse)
    notes: tuple[str, ...] = ()  # leniencies the origin applied (bare LF, obs-fold, ...)


@dataclass(frozen=True)
class UpstreamView:
    """What reached the recording origin with one exchange's token.

    ``untokened`` counts requests that reached the origin *without any* token while the
    exchange was in flight: when nothing carried the token, a proxy may have stripped or
    rewritten it, so "nothing forwarded" cannot be told apart from "forwarded, token lost".
    """

    requests: tuple[ForwardedRequest, ...]
    untokened: int = 0


#: `Response.status` of a raw exchange that got no response at all (`Response.ending` says why).
NO_RESPONSE = 0


@dataclass(frozen=True)
class Response:
    status: int
    reason: str
    headers: Headers
    body: bytes  # after transfer and content decoding; the first max_body_bytes only
    latency_ms: float  # send to last byte
    body_size: int = -1  # decoded size in bytes (-1: same as len(body))
    body_sha256: str = ""  # set when the body exceeded max_body_bytes (then body is a prefix)
    attempts: int = 1
    #: Raw exchanges only (`flamingo.raw`): how the connection ended - closed, open, reset,
    #: timeout, invalid, incomplete - and the responses after the first one (pipelining, 1xx).
    ending: str = ""
    more: tuple[Response, ...] = ()
    upstream: UpstreamView | None = None  # what the proxy forwarded (with ``upstream:``)

    @property
    def truncated(self) -> bool:
        return bool(self.body_sha256)


@dataclass(frozen=True)
class TransportError:
    kind: ErrorKind
    message: str
    latency_ms: float
    attempts: int = 1


Exchange = Response | TransportError


# --------------------------------------------------------------------------------------------
# Judgement
# --------------------------------------------------------------------------------------------

DifferenceKind = Literal["status", "header", "body", "exchange", "upstream"]
Outcome = Literal["match", "diff", "fail", "error"]
OUTCOMES: tuple[Outcome, ...] = ("match", "diff", "fail", "error")


@dataclass(frozen=True)
class Difference:
    """One way the two normalized responses differ.

    ``location`` is ``status``; a lower-case header name; a JSON path such as ``$.items[0].id``;
    or ``text`` / ``bytes`` for non-JSON bodies. ``old``/``new`` are JSON-able values; ``None``
    means absent.
    """

    kind: DifferenceKind
    location: str
    old: Any
    new: Any
    note: str = ""


@dataclass(frozen=True)
class ExpectFailure:
    target: str  # "old" | "new"
    what: str  # "status", "header x-cache", "json $.a"
    expected: Any
    actual: Any


@dataclass(frozen=True)
class CaseResult:
    case: Case
    outcome: Outcome
    old: Exchange
    new: Exchange
    differences: tuple[Difference, ...] = ()
    failures: tuple[ExpectFailure, ...] = ()
    noise: tuple[Difference, ...] = ()  # left out: they differ between two old responses too
    accepted: tuple[Acceptance, ...] = ()  # left out: the team chose to ship them
    old_replica: Exchange | None = None  # the second old response, when noise is learned


@dataclass(frozen=True)
class Acceptance:
    """A difference matched by an entry of accepted.yaml."""

    difference: Difference
    rule: int  # index of the entry in accepted.yaml
    reason: str


@dataclass(frozen=True)
class Check:
    name: str
    threshold: float
    observed: float | None  # None: could not be computed (counts as not passed)
    passed: bool
    detail: str = ""  # how observed was reached, when one number does not say it


@dataclass(frozen=True)
class Totals:
    cases: int = 0
    match: int = 0
    diff: int = 0
    fail: int = 0
    error: int = 0
    accepted: int = 0  # of the matches: cases that match only because of accepted differences

    def as_dict(self) -> dict[str, int]:
        return {
            "cases": self.cases,
            "match": self.match,
            "diff": self.diff,
            "fail": self.fail,
            "error": self.error,
            "accepted": self.accepted,
        }


Verdict = Literal["pass", "fail", "error"]


@dataclass(frozen=True)
class GateResult:
    verdict: Verdict
    stage: str | None
    totals: Totals
    checks: tuple[Check, ...] = field(default_factory=tuple)
    reason: str = ""  # why the verdict is "error", if it is


@dataclass(frozen=True)
class AcceptedRule:
    index: int
    template: str  # glob
    location: str
    reason: str
    kind: str | None = None
    old: Regex | None = None
    new: Regex | None = None
    expires: date | None = None
    source: str = ""  # FILE:LINE

    def expired(self, today: date) -> bool:
        return self.expires is not None and today > self.expires
