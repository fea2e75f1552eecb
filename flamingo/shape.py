"""Value shapes: what kind of volatile value a header value or JSON leaf is (pure, no clock).

Noise learning (`flamingo.noise`) asks this module whether two differing values are "the same
kind of thing": both a timestamp of *now*, both a UUID, both a hex id. The answer needs the time
the values were made in, and the core never reads a clock: the caller passes the run's time
window(s) in as data (`TimeWindows`, epoch seconds) - the run's own, plus a recording's when
``new`` is judged against a baseline from yesterday.

Shapes, in the order they are tried (the first that fits wins):

    shape        what                                                 needs a window
    epoch-s      a number, or a string of digits, of epoch seconds    yes
    epoch-ms     ... epoch milliseconds (13 digits)                   yes
    epoch-us     ... epoch microseconds (16 digits)                   yes
    http-date    RFC 1123 / 850 / asctime (``Fri, 27 Nov 2026 ...``)  yes
    iso-date     ISO 8601 date-time (``2026-11-27T15:45:26.123Z``)    yes
    uuid         8-4-4-4-12 hex
    hex          8+ hex digits with a digit and a letter, or 16+ digits-and-a-f
    base64       16+ characters of base64/base64url, mixed classes
    null         JSON null or an absent header
    empty        ""

A timestamp outside every window is not volatile: ``Last-Modified: 2025-01-01`` is a constant and
is compared as one (`shape` returns None for it, as for any other ordinary value). Only the
``TIME_SHAPES`` make a difference noise on their own; id shapes need evidence that the location
varies (see `flamingo.noise`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

__all__ = ["ID_SHAPES", "TIME_SHAPES", "TimeWindows", "seconds", "shape"]

TIME_SHAPES = frozenset({"epoch-s", "epoch-ms", "epoch-us", "http-date", "iso-date"})
ID_SHAPES = frozenset({"uuid", "hex", "base64"})

_DIGITS = re.compile(r"[0-9]{9,17}(?:\.[0-9]+)?")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_HEX = re.compile(r"(?=.*[0-9])(?=.*[a-fA-F])[0-9a-fA-F]{8,}|[0-9a-f]{16,}")
_BASE64 = re.compile(r"(?=.*[0-9])(?=.*[a-z])(?=.*[A-Z])[A-Za-z0-9+/_-]{16,}={0,2}")
_HTTP_DATE = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*,? [0-9A-Za-z :-]+(GMT|UTC|[+-][0-9]{4})?"
)
_ISO = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}"  # date, time to the minute
    r"(:[0-9]{2}(\.[0-9]+)?)?(Z|[+-][0-9]{2}:?[0-9]{2})?"  # seconds, fraction, offset
)


@dataclass(frozen=True)
class TimeWindows:
    """Spans of epoch seconds in which values were made: a value of *now* falls in one.

    Each span is widened by ``slack`` seconds on both sides (clock skew between hosts, times a
    little ahead such as a short ``Expires``).
    """

    spans: tuple[tuple[float, float], ...] = ()
    slack: float = 600.0

    def __contains__(self, seconds: float) -> bool:
        return any(a - self.slack <= seconds <= b + self.slack for a, b in self.spans)

    def plus(self, start: float, end: float) -> TimeWindows:
        return TimeWindows((*self.spans, (start, end)), self.slack)


_SCALE = {"epoch-s": 1.0, "epoch-ms": 1e3, "epoch-us": 1e6}


def _epoch(number: int | float | str, windows: TimeWindows) -> str | None:
    try:
        value = float(number)
    except OverflowError:  # an integer beyond any float (a JSON 1e400 written out): no time
        return None
    for unit, scale in _SCALE.items():
        if value / scale in windows:
            return unit
    return None


def _date(text: str, windows: TimeWindows) -> str | None:
    kind = "iso-date" if _ISO.fullmatch(text) else "http-date" if _HTTP_DATE.fullmatch(text) else ""
    moment = seconds(text, kind) if kind else None
    return kind if moment is not None and moment in windows else None


def seconds(value: Any, kind: str) -> float | None:
    """The epoch seconds a value of time shape ``kind`` (from `shape`) stands for."""
    try:
        if kind in _SCALE:
            return float(value) / _SCALE[kind]
        text = str(value).strip()
        if kind == "http-date":
            return parsedate_to_datetime(text).timestamp()
        if kind == "iso-date":
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return moment.timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return None


def shape(value: Any, windows: TimeWindows) -> str | None:
    """The volatile shape of ``value`` (a JSON leaf or a header value), or None."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return _epoch(value, windows)
    if not isinstance(value, str):
        return None
    if value == "":
        return "empty"
    text = value.strip()
    if _DIGITS.fullmatch(text):
        return _epoch(text, windows)
    if text[:1].isdigit() or text[:3] in _WEEKDAYS:
        found = _date(text, windows)
        if found is not None:
            return found
    if _UUID.fullmatch(text):
        return "uuid"
    if _HEX.fullmatch(text):
        return "hex"
    if _BASE64.fullmatch(text):
        return "base64"
    return None


_WEEKDAYS = frozenset({"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"})
