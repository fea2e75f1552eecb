"""Normalization: what of a response counts before two responses are compared.

This module owns the rules that turn a raw `Response` part into its comparable form. It is pure:
no sockets, no clocks, no printing, no files.

Theory of operation
-------------------
Header rules are data (a set of dropped names, the names ``Connection`` lists, masks) applied in
one pass, because headers are normalized on almost every case. Body normalization is a chain of
small rule functions with one shared signature, in the manner of structlog's processors: each
rule takes the value built so far plus the suite's `CompareRules` and returns the (possibly
same, possibly mutated) value. A rule that has nothing to do returns its input untouched, so a
suite without ``compare:`` rules pays for detection only.

Headers (`normalize_headers`, on a ``{lower-case name: [values]}`` map) drop or change, in one
pass:

    what                     drops / changes                           why
    Connection-listed        every name listed in ``Connection``       hop-by-hop by declaration
    `TRANSPORT_HEADERS`      framing, hop-by-hop, content-encoding     differ with the wire, not
                                                                       with the resource
    ``rules.ignore_headers`` those names (case-insensitively)          the suite said so
    ``rules.mask``           regexes on every kept value, in order     ids, timestamps, ...

then every name's values are sorted: the order of repeated field lines never counts.

Bodies arrive content-decoded (the send stage undid gzip/br/deflate), so content-encoding is
transport, not content. A body is first *detected* as one of three kinds:

    kind    when                                                          value
    json    Content-Type is application/json or */*+json, or the first     parsed data
            non-space byte is one of ``{["-0123456789tfn`` -- and the
            UTF-8 text really parses as JSON (NaN/Infinity rejected)
    text    the body is valid UTF-8 (and not JSON)                         str
    bytes   anything else                                                  bytes

and then run through `BODY_RULES` (`BodyRule`): ``drop_ignored_json_paths`` (JSONPath removals,
compiled once per expression), ``mask_json_strings`` (masks on every string leaf, never on object
keys: two masked keys could collide and silently merge), ``mask_text``. Bytes are never masked.

JSON values are compared as data: ``1 == 1.0``, but ``true != 1`` (see `json_equal`). A body is
JSON only if it is data without loss: an object with a duplicate key is compared as text (a
dict would keep only the last value), and a number a float cannot hold (``1e400``, ``1e-400``,
``0.1000000000000000000001``) is kept exact as a `JsonNumber`.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import MAX_EMAX, MIN_EMIN, Context, Decimal
from typing import Any, Literal

from flamingo.model import CompareRules, Headers, Mask

# --------------------------------------------------------------------------------------------
# Headers
# --------------------------------------------------------------------------------------------

#: Headers that describe the connection or the message framing, not the resource (RFC 9110 §7.6.1
#: plus Proxy-Connection and Content-Length), and Content-Encoding: bodies are compared decoded.
TRANSPORT_HEADERS: frozenset[str] = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "content-length",
        "content-encoding",
    }
)

HeaderMap = dict[str, list[str]]
NormalizedHeaders = dict[str, tuple[str, ...]]


@functools.lru_cache(maxsize=256)
def _dropped_names(ignore_headers: frozenset[str]) -> frozenset[str]:
    # The built-in drops plus the suite's: one set, built once per distinct ``ignore_headers``.
    return TRANSPORT_HEADERS | _lower_names(ignore_headers)


def normalize_headers(headers: Headers, rules: CompareRules) -> NormalizedHeaders:
    """Lower-case names, apply the header rules (module docstring) in one pass, and sort each
    name's values.

    The rules are data, not code: one set of dropped names (`TRANSPORT_HEADERS` plus
    ``rules.ignore_headers``), the names ``Connection`` lists, then ``rules.mask``. This runs
    twice per case whose raw headers differ, i.e. on almost every case (Date, request ids), so
    it is written as one loop: dropping a name before or after another drop changes nothing,
    and Connection's values are kept aside while collecting, so the order of the drops does not
    matter. Idempotent as long as no mask's replacement matches its own pattern.
    """
    dropped = _dropped_names(rules.ignore_headers)
    collected: HeaderMap = {}
    connection: list[str] = []
    for name, value in headers:
        key = name.lower()
        if key in dropped:
            if key == "connection":
                connection.append(value)
            continue
        # Surrounding whitespace is not part of a field value (RFC 9110 §5.5).
        if key in collected:
            collected[key].append(value.strip())
        else:
            collected[key] = [value.strip()]
    for value in connection:
        for token in value.split(","):
            collected.pop(token.strip().lower(), None)
    masks = rules.mask
    if masks:
        return {
            name: tuple(sorted(mask_text_value(value, masks) for value in values))
            for name, values in collected.items()
        }
    # Most names have one field line: nothing to sort.
    return {
        name: (values[0],) if len(values) == 1 else tuple(sorted(values))
        for name, values in collected.items()
    }


@functools.lru_cache(maxsize=256)
def _lower_names(names: frozenset[str]) -> frozenset[str]:
    # The loader already lower-cases; this keeps hand-built rules (tests, API users) honest too,
    # and the cache makes it free per call.
    return frozenset(name.lower() for name in names)


def header_value(headers: Headers, name: str) -> str | None:
    """The first value of header ``name`` (lower-case) in raw ``headers``, or None."""
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def mask_text_value(text: str, masks: Sequence[Mask]) -> str:
    """Apply every mask, in order, to one string."""
    for mask in masks:
        text = mask.apply(text)
    return text


# --------------------------------------------------------------------------------------------
# Bodies
# --------------------------------------------------------------------------------------------

BodyKind = Literal["json", "text", "bytes"]


@dataclass(frozen=True, slots=True, eq=False)
class NormalizedBody:
    """A body in comparable form: parsed JSON data, text, or raw bytes.

    Equality is by kind and value, with JSON data compared by `json_equal` (so ``true != 1``).
    """

    kind: BodyKind
    value: Any  # JSON data | str | bytes

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NormalizedBody):
            return NotImplemented
        if self.kind != other.kind:
            return False
        if self.kind == "json":
            return json_equal(self.value, other.value)
        return bool(self.value == other.value)

    __hash__ = None  # type: ignore[assignment]  # may hold mutable JSON data


BodyRule = Callable[[NormalizedBody, CompareRules], NormalizedBody]

# The bytes a JSON text can start with (RFC 8259: object, array, string, number, true/false/null).
_JSON_START = frozenset(b'{["-0123456789tfn')
_FIRST_NON_SPACE = re.compile(rb"[^ \t\r\n]")


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON (RFC 8259 §6); NaN would also make a body unequal to itself.
    raise ValueError(f"{name} is not valid JSON")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A dict keeps the last of duplicate keys, so {"a":1,"a":2} would equal {"a":2}: such a
    # body is not data we can compare as data (RFC 8259 §4: names SHOULD be unique).
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r} in a JSON object")
            seen.add(key)
    return data


class JsonNumber(str):
    """A JSON number that a float cannot hold: it overflows (``1e400`` would be inf, equal to
    ``2e400``), underflows to zero, or has more digits than a double keeps. Kept as its exact
    value in canonical decimal text, so two such numbers are equal exactly when their values
    are; never equal to a string, and equal to an int only of the same value."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, JsonNumber):
            return str.__eq__(self, other)
        if isinstance(other, int) and not isinstance(other, bool):
            return Decimal(str(self)) == other
        return False

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    __hash__ = str.__hash__


def _number(text: str) -> float | JsonNumber:
    value = float(text)
    exact = Decimal(text)
    if math.isfinite(value) and Decimal(repr(value)) == exact:
        return value  # the float is the number as written (0.10 and 0.1 alike)
    context = Context(prec=len(text) + 2, Emax=MAX_EMAX, Emin=MIN_EMIN)
    return JsonNumber(context.normalize(exact))


def load_json(text: str) -> Any:
    """Parse strict JSON text. Raises ValueError for NaN/Infinity literals and duplicate keys;
    numbers a float cannot hold exactly become `JsonNumber` (see there)."""
    if text.startswith("\ufeff"):  # a UTF-8 BOM is tolerated, as RFC 8259 §8.1 allows
        text = text[1:]
    try:
        return json.loads(
            text, parse_constant=_reject_constant, object_pairs_hook=_object, parse_float=_number
        )
    except RecursionError as exc:  # absurdly deep nesting: not data we can compare
        raise ValueError("JSON nested too deeply") from exc


def is_json_content_type(content_type: str | None) -> bool:
    """True for ``application/json`` and any ``*/*+json`` media type (parameters ignored)."""
    if not content_type:
        return False
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def detect_body(body: bytes, content_type: str | None) -> NormalizedBody:
    """Classify ``body`` as json / text / bytes without applying any rule."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return NormalizedBody("bytes", body)
    looks_json = is_json_content_type(content_type)
    if not looks_json:
        first = _FIRST_NON_SPACE.search(body)
        looks_json = first is not None and body[first.start()] in _JSON_START
    if looks_json:
        try:
            return NormalizedBody("json", load_json(text))
        except ValueError:
            pass  # declared or looked like JSON but is not: compare it as text
    return NormalizedBody("text", text)


@functools.lru_cache(maxsize=1024)
def compile_json_path(expression: str) -> Any:
    """Compile a JSONPath expression once (jsonpath_ng's extended grammar, filters included).

    Raises ValueError for an invalid expression, so the loader can validate with the very
    parser that will apply the path.
    """
    from jsonpath_ng.ext.parser import parse  # lazily: the parser tables are slow to build

    try:
        return parse(expression)
    except Exception as exc:  # jsonpath_ng raises bare Exception subclasses of several kinds
        raise ValueError(f"invalid JSONPath {expression!r}: {exc}") from exc


def _select_all(_value: Any) -> bool:
    return True


def drop_ignored_json_paths(body: NormalizedBody, rules: CompareRules) -> NormalizedBody:
    """Remove every match of ``rules.ignore_json_paths`` from JSON data (in place).

    ``$.items[*].updated_at`` removes the field from every element; ``$.a[0]`` removes the
    element itself (later elements shift on both sides alike).
    """
    if body.kind != "json" or not rules.ignore_json_paths:
        return body
    data = body.value
    for expression in rules.ignore_json_paths:
        try:
            data = compile_json_path(expression).filter(_select_all, data)
        except (KeyError, IndexError, TypeError, AttributeError):
            # The path does not fit this document's shape (e.g. an index into an object):
            # there is nothing to remove, and both sides are treated alike.
            continue
    return NormalizedBody("json", data)


def _mask_tree(value: Any, masks: Sequence[Mask]) -> Any:
    kind = type(value)
    if kind is str:
        return mask_text_value(value, masks)
    if kind is dict:
        return {key: _mask_tree(item, masks) for key, item in value.items()}
    if kind is list:
        return [_mask_tree(item, masks) for item in value]
    return value


def mask_json_strings(body: NormalizedBody, rules: CompareRules) -> NormalizedBody:
    """Apply masks to every string leaf of JSON data (object keys are left alone)."""
    if body.kind != "json" or not rules.mask:
        return body
    return NormalizedBody("json", _mask_tree(body.value, rules.mask))


def mask_text(body: NormalizedBody, rules: CompareRules) -> NormalizedBody:
    """Apply masks to a text body."""
    if body.kind != "text" or not rules.mask:
        return body
    return NormalizedBody("text", mask_text_value(body.value, rules.mask))


BODY_RULES: tuple[BodyRule, ...] = (
    # Paths are removed before masking so masks never spend time on ignored subtrees.
    drop_ignored_json_paths,
    mask_json_strings,
    mask_text,
)


def normalize_body(body: bytes, content_type: str | None, rules: CompareRules) -> NormalizedBody:
    """Detect the body's kind and apply `BODY_RULES`; without rules, detection is all."""
    normalized = detect_body(body, content_type)
    if not rules.ignore_json_paths and not rules.mask:
        return normalized
    for rule in BODY_RULES:
        normalized = rule(normalized, rules)
    return normalized


# --------------------------------------------------------------------------------------------
# JSON helpers shared by compare and expect
# --------------------------------------------------------------------------------------------


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON data: numbers by value (``1 == 1.0``), booleans never equal numbers.

    Python's ``==`` already decides everything except ``True == 1`` / ``False == 0.0``; it runs
    first at C speed and the walk only confirms no boolean met a number.
    """
    return bool(a == b) and _same_shape(a, b)


def _same_shape(a: Any, b: Any) -> bool:
    # Precondition: a == b, so containers have the same keys and lengths. Exact type checks
    # (parsed JSON holds plain dicts and lists) keep this walk cheap on the match path.
    kind = type(a)
    if kind is dict:
        return type(b) is dict and all(_same_shape(v, b[k]) for k, v in a.items())
    if kind is list:
        return type(b) is list and all(map(_same_shape, a, b))
    if kind is bool or type(b) is bool:
        return kind is type(b)
    return True


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def format_json_path(parts: Sequence[str | int]) -> str:
    """``["a", 0, "key with.dot"]`` -> ``$.a[0]["key with.dot"]``; ``[]`` -> ``$``.

    Integers are list indices; object keys that are not plain ASCII identifiers are quoted in
    brackets, so ``$["0"]`` (a key) never reads like ``$[0]`` (an index).
    """
    out = ["$"]
    for part in parts:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _IDENTIFIER.fullmatch(part):
            out.append(f".{part}")
        else:
            out.append(f"[{json.dumps(part, ensure_ascii=False)}]")
    return "".join(out)
