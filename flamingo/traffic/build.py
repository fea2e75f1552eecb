"""From observed requests to a suite YAML (pure: no IO, no clock).

Theory of operation
-------------------
1. **Scope.** Requests to other hosts than the chosen ones (default: the most frequent host) are
   left out, and so are side-effecting methods (anything but GET, HEAD, OPTIONS) unless
   ``include_unsafe`` is set. CONNECT is never replayed.
2. **Secrets out.** Sensitive headers (Authorization, Cookie, tokens, keys, sessions) are never
   written; their names are listed in the file's header comment with the ``targets.yaml`` lines
   that supply them from the environment (``${VAR}``). Sensitive query parameters and form/JSON
   body fields (token, session, password, signature, ...; any JWT-looking value) are dropped and
   counted. A request with a JWT-looking path segment is left out.
3. **Headers that matter.** Only headers that change what a proxy answers are kept (Accept,
   Accept-Encoding, Accept-Language, Content-Type with a body, Range, Origin, X-Requested-With,
   plus ``keep_headers``); browser noise (User-Agent, Sec-*, Referer, caching validators) is not.
4. **Deduplicate** on (method, request target, kept headers, body), counting repeats.
5. **Templates by shape.** A path segment that is a number, a UUID, a hex id (8+ hex digits with a
   digit) or a long opaque id is a variable; query values that differ between requests of one
   shape are variables too. Requests with the same method, shape, query keys, headers and body
   form one template: one suite request whose matrix holds the observed values. When the observed
   combinations are exactly the product of the axes, each variable is its own axis
   (``/api/items/{{ id }}``); otherwise one ``target`` axis lists the observed targets, so the
   matrix never invents a request nobody sent.
6. **Sample** (``sample``: a number of cases): every template gets one case first (the most
   frequent templates when there are fewer cases than templates), the rest is shared in proportion
   to each template's traffic, largest remainder first; within a template the most frequent
   requests win.
7. **Render** YAML whose strings the YAML 1.2 loader reads back as the same strings, with literal
   ``{{`` escaped as ``%7B%7B`` in targets, and check it with flamingo's own suite loader.

Request targets are kept byte for byte as recorded (already percent-encoded); flamingo sends a
``path`` as written, so a replayed request is the one that was observed.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

import yaml

from flamingo.errors import HarnessError, InputError
from flamingo.suite import VAR_RE
from flamingo.traffic.read import Observed
from flamingo.yamlload import FlamingoLoader

__all__ = ["SAFE_METHODS", "BuildOptions", "Imported", "build_suite", "is_sensitive"]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
NEVER_METHODS = frozenset({"CONNECT"})

DEFAULT_KEEP = frozenset(
    {
        "accept",
        "accept-encoding",
        "accept-language",
        "content-type",
        "range",
        "origin",
        "x-requested-with",
    }
)
_SENSITIVE_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"}
)
# Substrings that make a header name, query key or body field sensitive wherever they appear,
# and short words that do only as a whole word (so "monkey" and "inside" stay).
_SECRET_PARTS = (
    "token",
    "secret",
    "passw",
    "session",
    "auth",
    "credential",
    "signature",
    "csrf",
    "xsrf",
    "jwt",
    "apikey",
    "api_key",
    "api-key",
    "cookie",
    "private",
)
_SECRET_WORDS = frozenset(
    {"sid", "key", "sig", "code", "state", "otp", "pwd", "pin", "ticket", "nonce", "ssn"}
)
_JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")

_NUMBER_RE = re.compile(r"[0-9]+")
_UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_HEX_RE = re.compile(r"(?=[a-fA-F]*[0-9])[0-9a-fA-F]{8,}")
_OPAQUE_RE = re.compile(r"(?=.*[0-9])(?=.*[A-Za-z])[A-Za-z0-9_-]{20,}")


@functools.lru_cache(maxsize=4096)
def is_sensitive(name: str) -> bool:
    """A header name, query key or body field whose value must not be written to a suite."""
    lower = name.lower()
    if lower in _SENSITIVE_HEADERS or any(part in lower for part in _SECRET_PARTS):
        return True
    words = re.split(r"[^a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower())
    return any(word in _SECRET_WORDS for word in words)


@functools.lru_cache(maxsize=65536)
def segment_kind(segment: str) -> str | None:
    """``id`` for a path segment that names one of many things (a number, UUID, hex id)."""
    if (
        _NUMBER_RE.fullmatch(segment)
        or _UUID_RE.fullmatch(segment)
        or _HEX_RE.fullmatch(segment)
        or _OPAQUE_RE.fullmatch(segment)
    ):
        return "id"
    return None


@dataclass(frozen=True)
class BuildOptions:
    suite: str
    include_unsafe: bool = False
    sample: int | None = None  # at most this many cases, stratified by template
    hosts: tuple[str, ...] = ()  # keep requests to these hosts; () = the most frequent host
    keep_headers: tuple[str, ...] = ()  # more header names to keep (case-insensitive)
    noise: bool = True  # write compare: {noise: auto}
    source: str = ""  # how the file was made, for its header comment


@dataclass(frozen=True)
class Imported:
    text: str  # the suite YAML
    read: int  # requests read from the file
    distinct: int  # distinct requests in scope, before sampling
    templates: int  # suite requests written
    cases: int  # cases they expand to
    left_out: tuple[tuple[str, int], ...] = field(default_factory=tuple)
    secrets: tuple[tuple[str, int], ...] = field(default_factory=tuple)


# --------------------------------------------------------------------------------------------
# Cleaning one request
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Clean:
    method: str
    path: str
    query: tuple[tuple[str, str | None], ...]  # raw (key, value); None = no "="
    headers: tuple[tuple[str, str], ...]  # kept, sorted by lower name
    body: str | None

    @property
    def target(self) -> str:
        if not self.query:
            return self.path
        parts = (key if value is None else f"{key}={value}" for key, value in self.query)
        return f"{self.path}?{'&'.join(parts)}"


def _escape_braces(text: str) -> str:
    """Literal ``{{ x }}`` in a target would read as a template: percent-encode its braces."""
    if not VAR_RE.search(text):
        return text
    return text.replace("{", "%7B").replace("}", "%7D")


def _query(raw: str, secrets: Counter[str], where: str) -> tuple[tuple[str, str | None], ...]:
    kept: list[tuple[str, str | None]] = []
    for part in raw.split("&"):
        if not part:
            continue
        key, eq, value = part.partition("=")
        decoded_key = unquote_plus(key)
        if is_sensitive(decoded_key) or (eq and _JWT_RE.search(unquote_plus(value))):
            secrets[f"{where} {decoded_key}"] += 1
            continue
        kept.append((key, value if eq else None))
    return tuple(kept)


def _scrub_json(value: Any, secrets: Counter[str]) -> Any:
    if isinstance(value, dict):
        kept: dict[str, Any] = {}
        for key, item in value.items():
            if is_sensitive(str(key)) or (isinstance(item, str) and _JWT_RE.search(item)):
                secrets[f"body field {key}"] += 1
                continue
            kept[key] = _scrub_json(item, secrets)
        return kept
    if isinstance(value, list):
        return [_scrub_json(item, secrets) for item in value]
    return value


def _body(observed: Observed, secrets: Counter[str]) -> str | None:
    body = observed.body
    if body is None or body == "":
        return None
    mime = observed.content_type.lower()
    if "x-www-form-urlencoded" in mime:
        query = _query(body, secrets, "body field")
        return "&".join(key if value is None else f"{key}={value}" for key, value in query)
    if "json" in mime:
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            return body
        scrubbed = _scrub_json(data, secrets)
        return body if scrubbed == data else json.dumps(scrubbed, ensure_ascii=False)
    return body


def _clean(observed: Observed, keep: frozenset[str], secrets: Counter[str]) -> _Clean | str:
    """The request as a suite may hold it, or why it is left out."""
    path, _, raw_query = observed.target.partition("?")
    if _JWT_RE.search(path):
        return "a token in the path"
    headers: dict[str, tuple[str, str]] = {}
    for name, value in observed.headers:
        lower = name.lower()
        if lower in _SENSITIVE_HEADERS or (lower not in keep and is_sensitive(name)):
            secrets[f"header {name.title()}"] += 1
            continue
        if lower not in keep or lower in headers:
            continue
        if lower == "content-type" and not observed.body:
            continue
        if VAR_RE.search(value) or "\n" in value or "\r" in value:
            return "a header value flamingo's template syntax cannot hold"
        headers[lower] = (name, value)
    body = _body(observed, secrets)
    if body is not None and VAR_RE.search(body):
        return "a body flamingo's template syntax cannot hold"
    if body is not None and observed.content_type and "content-type" not in headers:
        headers["content-type"] = ("Content-Type", observed.content_type)
    return _Clean(
        method=observed.method,
        path=_escape_braces(path),
        query=tuple(
            (_escape_braces(k), None if v is None else _escape_braces(v))
            for k, v in _query(raw_query, secrets, "query")
        ),
        headers=tuple(headers[lower] for lower in sorted(headers)),
        body=body,
    )


# --------------------------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------------------------


@dataclass
class _Template:
    key: tuple[Any, ...]
    method: str
    segments: tuple[str | None, ...]  # literal segment, or None for an id position
    query_keys: tuple[tuple[str, bool], ...]  # (key, has "=")
    headers: tuple[tuple[str, str], ...]
    body: str | None
    instances: dict[_Clean, int] = field(default_factory=dict)  # request -> times seen

    @property
    def weight(self) -> int:
        return sum(self.instances.values())


def _template_key(request: _Clean) -> tuple[Any, ...]:
    segments = tuple(
        None if segment_kind(segment) else segment for segment in request.path.split("/")
    )
    query_keys = tuple((key, value is not None) for key, value in request.query)
    return (request.method, segments, query_keys, request.headers, request.body)


def _group(requests: dict[_Clean, int]) -> list[_Template]:
    """Requests (with how often each was seen) into templates, in order of first appearance."""
    templates: dict[tuple[Any, ...], _Template] = {}
    for request, times in requests.items():
        key = _template_key(request)
        template = templates.get(key)
        if template is None:
            template = templates[key] = _Template(
                key, request.method, key[1], key[2], request.headers, request.body
            )
        template.instances[request] = template.instances.get(request, 0) + times
    return list(templates.values())


def _by_frequency(template: _Template) -> list[_Clean]:
    """Most frequent first; ties keep the order they were first seen in (dicts keep it)."""
    order = {request: i for i, request in enumerate(template.instances)}
    return sorted(template.instances, key=lambda r: (-template.instances[r], order[r]))


def _largest_remainder(total: int, weights: Sequence[int], caps: Sequence[int]) -> list[int]:
    """``total`` shared in proportion to ``weights``, no share above its cap."""
    shares = [0] * len(weights)
    left = total
    while left > 0:
        open_ = [i for i in range(len(weights)) if shares[i] < caps[i]]
        if not open_:
            break
        weight = sum(weights[i] for i in open_)
        exact = {i: left * weights[i] / weight for i in open_}
        step = {i: min(math.floor(exact[i]), caps[i] - shares[i]) for i in open_}
        given = sum(step.values())
        for i, n in step.items():
            shares[i] += n
        left -= given
        if given == 0:  # hand out one at a time by remainder, heaviest first
            for i in sorted(
                open_, key=lambda i: (-(exact[i] - math.floor(exact[i])), -weights[i], i)
            ):
                if left == 0:
                    break
                if shares[i] < caps[i]:
                    shares[i] += 1
                    left -= 1
    return shares


def _sample(templates: list[_Template], cases: int) -> list[tuple[_Template, list[_Clean]]]:
    chosen = [(t, _by_frequency(t)) for t in templates]
    if cases >= sum(len(t.instances) for t in templates):
        return chosen
    if cases < len(templates):
        heaviest = sorted(range(len(templates)), key=lambda i: (-templates[i].weight, i))[:cases]
        return [(chosen[i][0], chosen[i][1][:1]) for i in sorted(heaviest)]
    extra = _largest_remainder(
        cases - len(templates),
        [t.weight for t in templates],
        [len(t.instances) - 1 for t in templates],
    )
    return [(t, ranked[: 1 + n]) for (t, ranked), n in zip(chosen, extra, strict=True)]


# --------------------------------------------------------------------------------------------
# Suite requests
# --------------------------------------------------------------------------------------------


def _variables(template: _Template, instances: list[_Clean]) -> list[tuple[str, int, list[str]]]:
    """(kind, index, values in first-seen order) of every position whose value varies."""
    positions: list[tuple[str, int, list[str]]] = []
    for index, literal in enumerate(template.segments):
        if literal is None:
            values = list(dict.fromkeys(r.path.split("/")[index] for r in instances))
            if len(values) > 1:
                positions.append(("path", index, values))
    for index, (_, has_value) in enumerate(template.query_keys):
        if has_value:
            values = list(dict.fromkeys(r.query[index][1] or "" for r in instances))
            if len(values) > 1:
                positions.append(("query", index, values))
    return positions


def _identifier(text: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_") or "value"
    if not re.match(r"[A-Za-z_]", base):
        base = f"q_{base}"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    taken.add(name)
    return name


def _shape(first: _Clean, names: dict[tuple[str, int], str]) -> str:
    """The target with ``{{ var }}`` at each variable position (literal elsewhere)."""
    segments = first.path.split("/")
    for index in range(len(segments)):
        if ("path", index) in names:
            segments[index] = f"{{{{ {names['path', index]} }}}}"
    target = "/".join(segments)
    if first.query:
        parts = []
        for index, (key, value) in enumerate(first.query):
            if ("query", index) in names:
                parts.append(f"{key}={{{{ {names['query', index]} }}}}")
            else:
                parts.append(key if value is None else f"{key}={value}")
        target += "?" + "&".join(parts)
    return target


def _display(template: _Template) -> str:
    """The shape for a name: ``/api/items/<id>?q=<q>``."""
    segments = [s if s is not None else "<id>" for s in template.segments]
    shown = "/".join(segments)
    if template.query_keys:
        shown += "?" + "&".join(f"{k}=<{k}>" if eq else k for k, eq in template.query_keys)
    return shown


def _request(template: _Template, instances: list[_Clean]) -> tuple[dict[str, Any], int]:
    """One suite request (a mapping in YAML order) and the cases it expands to."""
    first = instances[0]
    request: dict[str, Any] = {}
    variables = _variables(template, instances)
    if not variables:
        request["name"] = f"{template.method} {first.target}"
        request["path"] = first.target
        count = 1
    elif len(instances) == math.prod(len(values) for _, _, values in variables):
        taken: set[str] = set()
        names: dict[tuple[str, int], str] = {}
        for kind, index, _ in variables:
            label = "id" if kind == "path" else unquote_plus(template.query_keys[index][0])
            names[kind, index] = _identifier(label, taken)
        path = _shape(first, names)
        request["name"] = f"{template.method} {path}"
        request["path"] = path
        request["matrix"] = {names[kind, index]: values for kind, index, values in variables}
        count = len(instances)
    else:
        request["name"] = f"{template.method} {_display(template)} {{{{ target }}}}"
        request["path"] = "{{ target }}"
        request["matrix"] = {"target": [r.target for r in instances]}
        count = len(instances)
    if template.method != "GET":
        request["method"] = template.method
    if template.headers:
        request["headers"] = dict(template.headers)
    if template.body is not None:
        request["body"] = template.body
    return request, count


def _unique_names(requests: list[dict[str, Any]]) -> None:
    seen: Counter[str] = Counter()
    for request in requests:
        seen[request["name"]] += 1
        if seen[request["name"]] > 1:
            request["name"] += f" (variant {seen[request['name']]})"


def _common_headers(requests: list[dict[str, Any]]) -> dict[str, str]:
    """Headers every request sends with the same value: they move to ``defaults``."""
    if len(requests) < 2:
        return {}
    common = {name.lower(): (name, value) for name, value in requests[0].get("headers", {}).items()}
    for request in requests[1:]:
        own = {name.lower(): value for name, value in request.get("headers", {}).items()}
        common = {k: v for k, v in common.items() if own.get(k) == v[1]}
    for request in requests:
        headers = request.get("headers", {})
        for name in [n for n in headers if n.lower() in common]:
            del headers[name]
        if "headers" in request and not headers:
            del request["headers"]
    return dict(common.values())


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """Quotes every string that either YAML 1.1 (PyYAML) or flamingo's 1.2 core schema would
    read as something else (``1e3``, ``0x1f``, ``null``, ``yes``)."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    plain_tag = FlamingoLoader.resolve(FlamingoLoader, yaml.ScalarNode, value, (True, False))  # type: ignore[no-untyped-call,arg-type]
    style = "'" if plain_tag != "tag:yaml.org,2002:str" else None
    if "\n" in value:
        style = "|"
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def _comment(lines: Iterable[str]) -> str:
    return "".join(f"# {line}\n" if line else "#\n" for line in lines)


def _env_name(header: str) -> str:
    return re.sub(r"[^A-Z0-9]+", "_", header.upper()).strip("_")


def _header_comment(
    options: BuildOptions,
    read: int,
    distinct: int,
    templates: int,
    cases: int,
    left_out: Counter[str],
    secrets: Counter[str],
) -> str:
    lines = [
        f"Imported by `flamingo import {options.source}`: {read} requests read, "
        f"{distinct} distinct in scope, {templates} templates, {cases} cases"
        + (f" (sampled: --sample {options.sample})" if options.sample is not None else "")
        + ".",
    ]
    if left_out:
        lines.append("Left out:")
        lines.extend(f"  {count} x {reason}" for reason, count in sorted(left_out.items()))
    if secrets:
        lines.append("Sensitive values were dropped, never written here:")
        lines.extend(f"  {what} ({count} requests)" for what, count in sorted(secrets.items()))
        headers = sorted({w.split(" ", 1)[1] for w in secrets if w.startswith("header ")})
        if headers:
            lines.append(
                "When the targets need them, give them in targets.yaml from the environment:"
            )
            lines.append("  targets:")
            for target in ("old", "new"):
                pairs = ", ".join(f'{h}: "${{{_env_name(h)}}}"' for h in headers)
                lines.append(f"    {target}: {{ headers: {{ {pairs} }} }}")
    return _comment(lines)


def build_suite(observed: Sequence[Observed], options: BuildOptions, file: str = "") -> Imported:
    """The suite YAML for ``observed``; `InputError` when nothing is left to write."""
    left_out: Counter[str] = Counter()
    secrets: Counter[str] = Counter()
    keep = DEFAULT_KEEP | {name.lower() for name in options.keep_headers}

    hosts = Counter(o.host for o in observed if o.host)
    wanted = {h.lower() for h in options.hosts} or (
        {max(hosts, key=lambda h: hosts[h])} if hosts else set()
    )
    # A log repeats itself: each distinct request is cleaned once and carries its count.
    seen: dict[tuple[Any, ...], list[Any]] = {}  # what is sent -> [first seen, times]
    for item in observed:
        key = (item.method, item.target, item.headers, item.body, item.content_type, item.host)
        entry = seen.get(key)
        if entry is None:
            seen[key] = [item, 1]
        else:
            entry[1] += 1
    cleaned: dict[_Clean, int] = {}
    for item, times in seen.values():
        if wanted and item.host and item.host not in wanted:
            left_out[f"request to another host ({item.host})"] += times
            continue
        if item.method in NEVER_METHODS:
            left_out[f"{item.method} (cannot be replayed)"] += times
            continue
        if item.method not in SAFE_METHODS and not options.include_unsafe:
            left_out[f"{item.method} (side-effecting; --include-unsafe to keep)"] += times
            continue
        found: Counter[str] = Counter()
        result = _clean(item, keep, found)
        for what, n in found.items():
            secrets[what] += n * times
        if isinstance(result, str):
            left_out[result] += times
            continue
        cleaned[result] = cleaned.get(result, 0) + times
    if not cleaned:
        why = "; ".join(f"{n} x {reason}" for reason, n in sorted(left_out.items()))
        raise InputError(f"no request left to import ({why})", file or None)

    templates = _group(cleaned)
    distinct = sum(len(t.instances) for t in templates)
    chosen = (
        _sample(templates, options.sample)
        if options.sample is not None
        else [(t, _by_frequency(t)) for t in templates]
    )
    requests: list[dict[str, Any]] = []
    cases = 0
    for template, instances in chosen:
        request, count = _request(template, instances)
        requests.append(request)
        cases += count
    _unique_names(requests)

    document: dict[str, Any] = {"suite": options.suite, "tags": ["imported"]}
    common = _common_headers(requests)
    if common:
        document["defaults"] = {"headers": common}
    if options.noise:
        document["compare"] = {"noise": "auto"}
    document["requests"] = requests
    body = yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    text = (
        _header_comment(options, len(observed), distinct, len(requests), cases, left_out, secrets)
        + body
    )
    _check(text, options.suite, cases)
    return Imported(
        text=text,
        read=len(observed),
        distinct=distinct,
        templates=len(requests),
        cases=cases,
        left_out=tuple(sorted(left_out.items())),
        secrets=tuple(sorted(secrets.items())),
    )


def _check(text: str, suite: str, cases: int) -> None:
    """What was written must load as what was meant: anything else is flamingo's own bug."""
    from flamingo.load import parse_suites

    try:
        (loaded,) = parse_suites(text, f"<imported suite {suite}>")
    except InputError as exc:
        raise HarnessError(f"the imported suite does not load back: {exc}") from exc
    if loaded.case_count != cases:
        raise HarnessError(
            f"the imported suite loads back as {loaded.case_count} cases, not {cases}"
        )
