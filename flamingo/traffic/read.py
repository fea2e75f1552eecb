"""Reading recorded traffic: HAR files and access logs, into `Observed` requests.

This module owns the formats, nothing about what a suite should look like. Each reader takes the
file's text (the command line reads the bytes) and returns a `Reading`: the requests it could
read, in file order, and a count per reason of what it could not (a torn log line, a ``data:``
URL, a request line that is not HTTP). A file with no usable request at all, or one that is not
the format it claims to be, is an `InputError` (``FILE:LINE: message``, exit 2).

Formats:

* **HAR 1.2** (``log.entries[].request``: method, url, headers, postData), as browsers' DevTools
  and Playwright write it. The request target is taken from the URL as recorded (already
  percent-encoded), without its fragment.
* **combined** (nginx/Apache ``$remote_addr - $remote_user [$time_local] "$request" $status
  $body_bytes_sent "$http_referer" "$http_user_agent"``; the ``common`` format without the last
  two fields is read too). nginx escapes bytes it cannot print as ``\\xHH``; those are decoded.
* **json**: one JSON object per line (nginx ``log_format ... escape=json``). The request is
  ``request`` ("GET /p?q HTTP/1.1"), or ``method``/``request_method`` with ``request_uri``,
  ``uri``, ``path`` or ``url`` (plus ``args``/``query_string``/``query`` when the target has no
  ``?``). Headers come from ``http_*`` keys (nginx's variable names: ``http_accept`` is
  ``Accept``) or a ``headers`` object; the host from ``host``/``http_host``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from flamingo.errors import InputError
from flamingo.load.validate import _TOKEN_RE  # RFC 9110 token (a method)
from flamingo.model import Headers, header_values

__all__ = ["LOG_FORMATS", "Observed", "Reading", "read_access_log", "read_har"]

LOG_FORMATS = ("combined", "json")

_CTL_RE = re.compile(r"[\s\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Observed:
    """One request as it was seen: what a suite request is built from."""

    method: str
    target: str  # origin-form request target as sent: /path?query, percent-encoded
    headers: Headers = ()
    body: str | None = None
    content_type: str = ""  # of the body (HAR postData.mimeType or the Content-Type header)
    host: str = ""  # lower-case; "" when the format does not say
    line: int = 0  # where it was read (log line; HAR: line of the entry when known)


@dataclass(frozen=True)
class Reading:
    observed: tuple[Observed, ...]
    skipped: tuple[tuple[str, int], ...] = field(default_factory=tuple)  # reason -> count


def _target_problem(target: str) -> str | None:
    if not target.startswith("/"):
        return "request target is not a path (absolute-form, '*' or empty)"
    if _CTL_RE.search(target):
        return "request target has spaces or control characters"
    return None


def _split_url(url: str) -> tuple[str, str, str] | None:
    """(scheme, host, origin-form target) of an absolute http(s) URL, else None."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    host = (parts.hostname or "").lower()
    if parts.port is not None:
        host += f":{parts.port}"
    return parts.scheme, host, target


# --------------------------------------------------------------------------------------------
# HAR
# --------------------------------------------------------------------------------------------


def _har_entries(text: str, file: str) -> list[Any]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"not a HAR file: invalid JSON ({exc.msg})", file, exc.lineno) from None
    except RecursionError:
        raise InputError("not a HAR file: JSON nested too deeply", file, 1) from None
    log = document.get("log") if isinstance(document, dict) else None
    entries = log.get("entries") if isinstance(log, dict) else None
    if not isinstance(entries, list):
        raise InputError("not a HAR file: no log.entries list", file, 1)
    return entries


def _entry_lines(text: str, count: int) -> list[int]:
    """Best-effort line of each entry: the n-th ``"request"`` key (HAR writers put one per entry).

    JSON parsing keeps no positions; a wrong guess only makes a message point nearby.
    """
    lines: list[int] = []
    position = 0
    line = 1
    for match in re.finditer(r'"request"\s*:', text):
        line += text.count("\n", position, match.start())
        position = match.start()
        lines.append(line)
        if len(lines) == count:
            break
    return lines + [0] * (count - len(lines))


def _har_headers(value: Any) -> Headers:
    if not isinstance(value, list):
        return ()
    headers: list[tuple[str, str]] = []
    for item in value:
        if not isinstance(item, dict):
            continue
        name, text = item.get("name"), item.get("value")
        # HTTP/2 pseudo-headers (":authority") are not headers a suite can send.
        if isinstance(name, str) and isinstance(text, str) and name and not name.startswith(":"):
            headers.append((name, text))
    return tuple(headers)


def read_har(text: str, file: str) -> Reading:
    """The requests of a HAR document, in entry order."""
    entries = _har_entries(text, file)
    lines = _entry_lines(text, len(entries))
    observed: list[Observed] = []
    skipped: Counter[str] = Counter()
    for index, entry in enumerate(entries):
        request = entry.get("request") if isinstance(entry, dict) else None
        if not isinstance(request, dict):
            skipped["HAR entry without a request"] += 1
            continue
        method, url = request.get("method"), request.get("url")
        if not isinstance(method, str) or not _TOKEN_RE.fullmatch(method):
            skipped["not an HTTP method"] += 1
            continue
        split = _split_url(url) if isinstance(url, str) else None
        if split is None:
            skipped["not an http(s) URL (data:, blob:, ws:, ...)"] += 1
            continue
        _, host, target = split
        if (problem := _target_problem(target)) is not None:
            skipped[problem] += 1
            continue
        headers = _har_headers(request.get("headers"))
        post = request.get("postData")
        body: str | None = None
        content_type = ""
        if isinstance(post, dict) and isinstance(post.get("text"), str):
            body = post["text"]
            size = request.get("bodySize")
            if not body and isinstance(size, int) and size > 0:
                # Written without content (Playwright's "omit"): replaying it empty would send
                # a different request than the one recorded.
                skipped["request body not recorded in the HAR"] += 1
                continue
            mime = post.get("mimeType")
            content_type = mime if isinstance(mime, str) else ""
        if not content_type:
            content_type = (header_values(headers, "content-type") or [""])[0]
        observed.append(
            Observed(
                method=method.upper(),
                target=target,
                headers=headers,
                body=body,
                content_type=content_type,
                host=host,
                line=lines[index],
            )
        )
    return _finish(observed, skipped, file, "HAR entries")


# --------------------------------------------------------------------------------------------
# Access logs
# --------------------------------------------------------------------------------------------

_QUOTED = r'"((?:[^"\\]|\\.)*)"'
_COMBINED_RE = re.compile(
    r"^\S+ \S+ \S+ \[[^\]]*\] " + _QUOTED + r" (\d{3}|-) \S+(?: " + _QUOTED + " " + _QUOTED + ")?"
)
_ESCAPE_RE = re.compile(r"\\x([0-9A-Fa-f]{2})|\\(.)")


def _unescape(text: str) -> str:
    """nginx's log escaping: ``\\xHH`` for unprintable bytes, ``\\"`` and ``\\\\``."""
    if "\\" not in text:
        return text
    raw = bytearray()
    end = 0
    for match in _ESCAPE_RE.finditer(text):
        raw += text[end : match.start()].encode("utf-8", "surrogateescape")
        if match.group(1) is not None:
            raw.append(int(match.group(1), 16))
        else:
            raw += match.group(2).encode("utf-8", "surrogateescape")
        end = match.end()
    raw += text[end:].encode("utf-8", "surrogateescape")
    return raw.decode("utf-8", "replace")


def _request_line(line: str) -> tuple[str, str] | str:
    """(method, target) of ``METHOD TARGET HTTP/x``, or the reason it is not one."""
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return "not an HTTP request line (garbage, a TLS handshake, HTTP/0.9)"
    method, target = parts[0], parts[1]
    if not _TOKEN_RE.fullmatch(method):
        return "not an HTTP method"
    if target.startswith(("http://", "https://")):
        split = _split_url(target)
        if split is None:
            return "request target is not a path (absolute-form, '*' or empty)"
        target = split[2]
    return method, target


def _combined(line: str, number: int, skipped: Counter[str]) -> Observed | None:
    match = _COMBINED_RE.match(line)
    if match is None:
        skipped["not a combined/common log line"] += 1
        return None
    request = _request_line(_unescape(match.group(1)))
    if isinstance(request, str):
        skipped[request] += 1
        return None
    method, target = request
    if (problem := _target_problem(target)) is not None:
        skipped[problem] += 1
        return None
    headers: list[tuple[str, str]] = []
    referer, agent = match.group(3), match.group(4)
    if referer not in (None, "", "-"):
        headers.append(("Referer", _unescape(referer)))
    if agent not in (None, "", "-"):
        headers.append(("User-Agent", _unescape(agent)))
    return Observed(method=method, target=target, headers=tuple(headers), line=number)


def _text_field(record: dict[str, Any], *keys: str) -> str:
    for key in keys:
        value = record.get(key)
        if isinstance(value, str) and value not in ("", "-"):
            return value
    return ""


def _header_name(variable: str) -> str:
    """nginx ``http_x_forwarded_for`` -> ``X-Forwarded-For``."""
    return "-".join(word.capitalize() for word in variable.split("_") if word)


def _json_line(line: str, number: int, skipped: Counter[str], file: str) -> Observed | None:
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, RecursionError):
        skipped["not a JSON object"] += 1
        return None
    if not isinstance(record, dict):
        skipped["not a JSON object"] += 1
        return None
    request_line = _text_field(record, "request")
    if request_line:
        request = _request_line(request_line)
        if isinstance(request, str):
            skipped[request] += 1
            return None
        method, target = request
    else:
        method = _text_field(record, "method", "request_method")
        target = _text_field(record, "request_uri", "uri", "path", "url")
        if not method or not target:
            skipped["no request (request, or method and request_uri/uri/path)"] += 1
            return None
        if not _TOKEN_RE.fullmatch(method):
            skipped["not an HTTP method"] += 1
            return None
        if target.startswith(("http://", "https://")):
            split = _split_url(target)
            target = split[2] if split is not None else ""
        query = _text_field(record, "args", "query_string", "query")
        if query and "?" not in target:
            target += "?" + query
    if (problem := _target_problem(target)) is not None:
        skipped[problem] += 1
        return None
    headers: list[tuple[str, str]] = []
    given = record.get("headers")
    if isinstance(given, dict):
        headers.extend((n, v) for n, v in given.items() if isinstance(v, str) and v != "")
    for key, value in record.items():
        usable = isinstance(value, str) and value not in ("", "-")
        if usable and key.startswith("http_") and key != "http_host":
            headers.append((_header_name(key[5:]), value))
    body = record.get("request_body")
    return Observed(
        method=method.upper(),
        target=target,
        headers=tuple(headers),
        body=body if isinstance(body, str) and body not in ("", "-") else None,
        content_type=_text_field(record, "content_type", "http_content_type"),
        host=_text_field(record, "host", "http_host", "server_name").lower(),
        line=number,
    )


def read_access_log(text: str, file: str, log_format: str) -> Reading:
    """The requests of an access log, one per line, in file order."""
    if log_format not in LOG_FORMATS:
        raise InputError(f"unknown log format {log_format!r} (expected one of {LOG_FORMATS})")
    observed: list[Observed] = []
    skipped: Counter[str] = Counter()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if log_format == "json":
            item = _json_line(line, number, skipped, file)
        else:
            item = _combined(line, number, skipped)
        if item is not None:
            observed.append(item)
    return _finish(observed, skipped, file, f"{log_format} log lines")


def _finish(observed: list[Observed], skipped: Counter[str], file: str, what: str) -> Reading:
    if not observed:
        why = "; ".join(f"{count} {reason}" for reason, count in sorted(skipped.items()))
        raise InputError(
            f"no HTTP request could be read from its {what}" + (f" ({why})" if why else ""), file
        )
    return Reading(tuple(observed), tuple(sorted(skipped.items())))
