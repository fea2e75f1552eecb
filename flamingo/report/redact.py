"""Secret redaction applied to every text flamingo writes (files, console).

Theory of operation
-------------------
What is secret:

* every value substituted from ``${VAR}`` in targets.yaml (``Config.secrets``; a
  ``${VAR:-default}`` fallback is written in the file, so it is not one);
* the values of the credential headers (`SECRET_HEADERS`) a target is configured with;
* per case, the values of the credential headers of its request (a suite's ``Cookie:``) and of
  both responses (``Set-Cookie``) - see `credentials_of`.

A credential value yields its parts too (`credential_values`): the token after an auth scheme
(``Bearer <token>``), every cookie ``name=value`` pair and cookie value, so a server that echoes
only the token or only the cookie value is caught as well. Parts shorter than `MIN_PART` are not
redacted on their own (redacting every ``1`` in a report would destroy it, not protect it).

Where a secret can surface: a target may echo it anywhere - a JSON body value or *key* (a
difference's value or location), a text excerpt, another header, an ``expect`` failure, an error
message - and a writer may encode it on the way out (JSON ``\\u`` escapes, XML/HTML entities,
``repr`` quotes). So `Redactor` matches each secret in all of those encodings, and redacts
structurally (`value`, `row`) *before* anything is formatted, then once more over the final text
(`text`). A text excerpt (~120 characters, `flamingo.compare`) can cut a secret in half, so the
ends of body values are also checked for a secret's prefix or suffix (`MIN_FRAGMENT` characters
or more).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus

if TYPE_CHECKING:
    from flamingo.model import CaseResult, Config, Headers

REDACTED = "[REDACTED]"
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
#: Parts of a credential value (a token, a cookie value) shorter than this are not secrets alone.
MIN_PART = 4
#: A body excerpt that starts or ends with at least this much of a secret has it redacted.
MIN_FRAGMENT = 4


def credential_values(name: str, value: str) -> list[str]:
    """The secret strings of one credential header: the whole value and its parts."""
    values = [value]
    lower = name.lower()
    if lower in ("authorization", "proxy-authorization"):
        scheme, _, token = value.strip().partition(" ")
        values.append(token.strip() if token else scheme)
    elif lower in ("cookie", "set-cookie"):
        pairs = value.split(";")
        if lower == "set-cookie":
            pairs = pairs[:1]  # the rest are attributes (Path, Expires, HttpOnly ...)
        for pair in pairs:
            pair = pair.strip()
            values.append(pair)
            values.append(pair.partition("=")[2].strip())
    return list(dict.fromkeys(v for v in values if v == value or len(v) >= MIN_PART))


def _credentials(headers: Headers) -> list[str]:
    found: list[str] = []
    for name, value in headers:
        if name.lower() in SECRET_HEADERS and value:
            found += credential_values(name, value)
    return found


def credentials_of(result: CaseResult) -> list[str]:
    """Credential values one case carries: its request's and both responses' headers."""
    found = _credentials(result.case.headers)
    for exchange in (result.old, result.new):
        headers = getattr(exchange, "headers", None)
        if headers:
            found += _credentials(headers)
    return found


def _encodings(secret: str) -> set[str]:
    """The forms a secret takes in the outputs (and in what a target may echo)."""
    forms = {
        secret,
        json.dumps(secret)[1:-1],  # gate.json's ensure_ascii escapes
        json.dumps(secret, ensure_ascii=False)[1:-1],
        html.escape(secret, quote=True),
        html.escape(secret, quote=False),
        repr(secret)[1:-1],  # describe_difference quotes values with repr
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
    }
    return {form for form in forms if form}


#: Keys whose string values are excerpts or cut examples: a secret cut in half may end them.
_CUT_KEYS = frozenset({"old", "new", "actual", "example_change"})
#: The values of a credential-header record that are blanked whatever they are.
_BLANK_KEYS = frozenset({"old", "new", "expected", "actual", "example_change"})
#: Where a cut value can end or start inside a longer text: a JSON string's quotes, and the
#: ellipsis `flamingo.signature.example_change` appends when it cuts a value short.
_CUT_POINTS = re.compile('(["…])')
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def _credential_record(record: dict[str, Any]) -> bool:
    """A difference (or signature) of a credential header, or an expect failure on one."""
    if record.get("kind") == "header" and record.get("location") in SECRET_HEADERS:
        return True
    location = record.get("location")
    if record.get("kind") == "upstream" and isinstance(location, str):  # upstream.header.NAME
        return location.rpartition(".header.")[2] in SECRET_HEADERS and ".header." in location
    what = record.get("what")
    return isinstance(what, str) and what.startswith("header ") and what[7:] in SECRET_HEADERS


class Redactor:
    """Replaces secrets with `REDACTED` in text, in JSON-able values and in result rows."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets: frozenset[str] = frozenset(s for s in secrets if s)
        forms: set[str] = set()
        for secret in self.secrets:
            forms |= _encodings(secret)
        # Longest first, so a secret that contains another is replaced whole.
        self._forms = tuple(sorted(forms, key=lambda f: (-len(f), f)))
        self._pattern = (
            re.compile("|".join(re.escape(f) for f in self._forms)) if self._forms else None
        )
        self._extended: dict[frozenset[str], Redactor] = {}
        self._ends: tuple[set[str], set[str]] | None = None  # built on first use (`_cut`)
        self._longest = 0

    @classmethod
    def for_config(cls, config: Config) -> Redactor:
        """The run's redactor: ``${VAR}`` values and the targets' credential header values."""
        return cls([*config.secrets, *_credentials(config.old.headers + config.new.headers)])

    def extended(self, secrets: Iterable[str]) -> Redactor:
        """This redactor plus more secrets (itself when there is nothing new); memoized."""
        more = frozenset(s for s in secrets if s) - self.secrets
        if not more:
            return self
        found = self._extended.get(more)
        if found is None:
            if len(self._extended) >= 256:  # a case's cookies are often the same as the last
                self._extended.clear()
            found = self._extended[more] = Redactor(self.secrets | more)
        return found

    @property
    def active(self) -> bool:
        return self._pattern is not None

    # -- text -----------------------------------------------------------------------------

    def text(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(REDACTED, text)

    def json_text(self, text: str) -> str:
        """`text` for a JSON document: only inside its string literals, so a secret that looks
        like a number (``${PORT}``) can never turn ``"latency_ms": 12.5`` into invalid JSON."""
        if self._pattern is None or self._pattern.search(text) is None:
            return text
        pattern = self._pattern
        return _JSON_STRING.sub(lambda m: pattern.sub(REDACTED, m.group(0)), text)

    def fragment(self, text: str) -> str:
        """`text`, plus a secret cut in half where the text was cut: at either end of it or of
        a quoted part of it (an excerpt, alone or JSON-quoted in an example) and before an
        ellipsis (an example value cut short)."""
        text = self.text(text)
        if self._pattern is None:
            return text
        pieces = _CUT_POINTS.split(text)
        for index in range(0, len(pieces), 2):  # odd indices are the delimiters themselves
            pieces[index] = self._cut(self._cut(pieces[index], head=True), head=False)
        return "".join(pieces)

    def _cut(self, text: str, head: bool) -> str:
        """Redact a secret's proper prefix ending ``text`` (or proper suffix starting it)."""
        if self._ends is None:
            # Cut values are raw body text or JSON text: those two forms are enough here.
            forms = {f for s in self.secrets for f in (s, json.dumps(s, ensure_ascii=False)[1:-1])}
            self._longest = max(len(f) for f in forms)
            self._ends = (
                {f[:n] for f in forms for n in range(MIN_FRAGMENT, len(f))},
                {f[-n:] for f in forms for n in range(MIN_FRAGMENT, len(f))},
            )
        prefixes, suffixes = self._ends
        for size in range(min(self._longest - 1, len(text)), MIN_FRAGMENT - 1, -1):
            if head and text[:size] in suffixes:
                return REDACTED + text[size:]
            if not head and text[-size:] in prefixes:
                return text[:-size] + REDACTED
        return text

    # -- values ---------------------------------------------------------------------------

    def value(self, value: Any) -> Any:
        """JSON data (a body value, an expected value) with every string redacted, object keys
        included; a copy."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value

    def _record(self, record: dict[str, Any]) -> dict[str, Any]:
        """One of flamingo's own records (a row, a difference, a failure, an exchange view, the
        gate document, a signature): field names stay, values are redacted; a copy."""
        blank = _credential_record(record)
        data = "kind" in record or "what" in record  # old/new/expected/actual: a target's data
        out: dict[str, Any] = {}
        for key, item in record.items():
            if blank and key in _BLANK_KEYS:
                out[key] = None if item is None else REDACTED
            elif isinstance(item, str):
                out[key] = self.fragment(item) if key in _CUT_KEYS else self.text(item)
            elif data and key in _BLANK_KEYS:
                out[key] = self.value(item)
            elif isinstance(item, dict):
                out[key] = self._record(item)
            elif isinstance(item, list):
                out[key] = [self._record(i) if isinstance(i, dict) else self.value(i) for i in item]
            else:
                out[key] = item
        return out

    def row(self, row: dict[str, Any], extra: Iterable[str] = ()) -> dict[str, Any]:
        """A result row (`flamingo.report.rows.result_view`) with every secret redacted.

        ``extra``: this case's own credential values (`credentials_of`). Credential-header
        differences and failures are blanked whatever their value.
        """
        return self.extended(extra)._record(row)

    def gate(self, doc: dict[str, Any]) -> dict[str, Any]:
        """The gate document with every secret redacted (a copy)."""
        return self._record(doc)


def quiet(row: dict[str, Any]) -> bool:
    """True when a result row holds nothing a target sent beyond status, reason and sizes: no
    difference, failure, noise or accepted record and no error message (a plain match). Such a
    row needs no structural redaction - the text pass over its line is enough - which keeps the
    common case cheap."""
    for item in row.values():
        if isinstance(item, list) and item:
            return False
        if isinstance(item, dict) and ("message" in item or "error" in item or "upstream" in item):
            return False
    return True
