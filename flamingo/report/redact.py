"""Secret redaction: values are redacted in the records, before anything is serialized.

Theory of operation
-------------------
What is secret (`Redactor.for_config`, once per run; every front door builds it there):

* every value substituted from ``${VAR}`` in targets.yaml (``Config.secrets``; a
  ``${VAR:-default}`` fallback is written in the file, so it is not one), and every string it was
  substituted into (``Config.secret_fields``: ``Bearer ${T}`` as sent, shown as
  ``Bearer [REDACTED]``);
* the values of the credential headers (`SECRET_HEADERS`) a target is configured with, and the
  credentials of a ``base_url``'s userinfo - written in the file or not: the password (or a user
  without one: a token), ``user:password``, its base64 and the ``Basic ...`` header the client
  derives from it;
* per case, the values of the credential headers of its request (a suite's ``Cookie:``) and of
  both responses (``Set-Cookie``) - see `credentials_of`. A credential value yields its parts too
  (`credential_values`): the token after an auth scheme, every cookie pair and cookie value.

How a secret is found depends on its length:

* a secret of `MIN_SECRET` characters or more is recognised anywhere in a free-text value (and in
  the encodings a target may echo it in: JSON escapes, HTML entities, percent-encoding); a text
  excerpt that was cut through one (`flamingo.compare` keeps ~120 characters) has the cut piece
  redacted too (`MIN_FRAGMENT`);
* a shorter one (``1``, ``e``, a quote) cannot be told from ordinary text - redacting every ``e``
  destroys a report and protects nothing - so it is redacted where it was put: the fields it was
  substituted into (shown from the configuration), any value that *is* it (a header value, a JSON
  string), and whatever a target sends back under the name of a header that carries a secret (an
  echo of ``X-Token`` in a header or a JSON key of that name).

Where: `Redactor.result` makes the redacted copy of a judged `CaseResult` (differences, expect
failures, noise, accepted differences, error messages, reason phrases) before it is counted,
written or shown, so signatures, results.jsonl, junit.xml, report.html, the console and the
pytest plugin all start from redacted records; `Redactor.gate` redacts the free-text fields of the
gate document (targets, reason, learned noise); `Redactor.text` a message (crash.log, stderr).
No writer ever searches and replaces in a finished document: a secret spelled ``verdict``,
``pass``, ``1`` or ``"`` cannot touch a key, a number or the syntax of a file.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus, unquote, urlsplit, urlunsplit

from flamingo.model import REDACTED, Response, TransportError

if TYPE_CHECKING:
    from flamingo.model import (
        Acceptance,
        CaseResult,
        Config,
        Difference,
        Exchange,
        ExpectFailure,
        Headers,
    )

__all__ = [
    "MIN_SECRET",
    "REDACTED",
    "SECRET_HEADERS",
    "Redactor",
    "credential_values",
    "credentials_of",
    "userinfo_secrets",
]

SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
#: Secrets (and parts of credential values) shorter than this are not searched for in free text.
MIN_SECRET = 4
#: A body excerpt that starts or ends with at least this much of a secret has it redacted.
MIN_FRAGMENT = 4
#: Distinct per-case credential values remembered for the run-wide gate document.
MAX_LEARNED = 512


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
    return list(dict.fromkeys(v for v in values if v == value or len(v) >= MIN_SECRET))


def _credentials(headers: Headers) -> list[str]:
    found: list[str] = []
    for name, value in headers:
        if name.lower() in SECRET_HEADERS and value:
            found += credential_values(name, value)
    return found


def credentials_of(result: CaseResult) -> list[str]:
    """Credential values one case carries: its request's and both responses' headers."""
    found = _credentials(result.case.headers)
    for exchange in (result.old, result.new, result.old_replica):
        if isinstance(exchange, Response) and exchange.headers:
            found += _credentials(exchange.headers)
    return found


def _basic(user: str, password: str) -> list[str]:
    """``Basic <base64(user:password)>`` as a client builds it (aiohttp: latin-1; httpx: utf-8)."""
    forms = []
    for encoding in ("latin-1", "utf-8"):
        try:
            token = base64.b64encode(f"{user}:{password}".encode(encoding)).decode("ascii")
        except UnicodeEncodeError:
            continue
        forms += [token, f"Basic {token}"]
    return forms


def userinfo_secrets(base_url: str) -> list[str]:
    """The credentials a base URL carries in its userinfo, in every form they travel in: the
    password (a user without a password: the user - a token), ``user:password`` (raw and as
    written) and the Basic authorization the client sends for it."""
    try:
        parts = urlsplit(base_url)
    except ValueError:
        return []
    if "@" not in parts.netloc:
        return []
    written = parts.netloc.rpartition("@")[0]
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    secret = password if parts.password is not None else user
    if not secret:
        return []
    return [secret, written, f"{user}:{password}", *_basic(user, password)]


def _shown_url(url: str) -> str:
    """A URL with the secret of its userinfo (the password, else the user) shown redacted."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if "@" not in parts.netloc:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user, colon, _password = userinfo.partition(":")
    shown = f"{user}:{REDACTED}" if colon else REDACTED
    return urlunsplit(parts._replace(netloc=f"{shown}@{host}"))


def _encodings(secret: str) -> set[str]:
    """The forms a target may echo a secret in (a JSON text, an HTML page, a URL) - also of its
    UTF-8 bytes read back as latin-1 (HTTP header values are bytes; many servers and clients
    decode them as latin-1 and echo that)."""
    forms: set[str] = set()
    for base in {secret, secret.encode("utf-8").decode("latin-1")}:
        forms |= {
            base,
            json.dumps(base)[1:-1],
            json.dumps(base, ensure_ascii=False)[1:-1],
            html.escape(base, quote=True),
            html.escape(base, quote=False),
            quote(base, safe=""),
            quote(base),
            quote_plus(base),
        }
    return {form for form in forms if len(form) >= MIN_SECRET}


#: JSON path segments: ``.name`` or ``["name"]`` (the last one names what a value is).
_LAST_KEY = re.compile(r'(?:\.([^.\[\]]+)|\["((?:[^"\\]|\\.)*)"\])$')


#: Gate-document keys whose values are flamingo's own (enumerations, names, ids, times) or were
#: built from redacted records: a secret spelled like one of them must not change them.
_OWN_KEYS = frozenset(
    {
        "verdict",
        "stage",
        "classification",
        "judgeName",
        "name",
        "kind",
        "outcome",
        "id",
        "started_at",
        "finished_at",
        "complete",
        "signatures",
    }
)


def _last_key(location: str) -> str | None:
    match = _LAST_KEY.search(location)
    if match is None:
        return None
    return (match.group(1) or match.group(2) or "").lower()


class Redactor:
    """Redacts the records of one run (see the module docstring)."""

    def __init__(
        self,
        secrets: Iterable[str] = (),
        *,
        shown: Mapping[str, str] | None = None,
        secret_headers: Iterable[str] = (),
    ) -> None:
        #: every secret value, short ones included
        self.secrets: frozenset[str] = frozenset(s for s in secrets if s)
        self.short: frozenset[str] = frozenset(s for s in self.secrets if len(s) < MIN_SECRET)
        #: a string a secret was substituted into -> how it is shown
        self.shown: dict[str, str] = dict(shown or {})
        #: lower-case names of the headers that carry a secret: what comes back under them is one
        self.secret_headers: frozenset[str] = SECRET_HEADERS | {h.lower() for h in secret_headers}
        replacements: dict[str, str] = {}
        for secret in self.secrets - self.short:
            for form in _encodings(secret):
                replacements[form] = REDACTED
        for value, text in self.shown.items():
            if len(value) >= MIN_SECRET:
                replacements[value] = text
        replacements.pop(REDACTED, None)
        self._replacements = replacements
        # Longest first, so a secret that contains another is replaced whole; an existing
        # REDACTED is matched (and kept) first, so no secret can eat into one.
        forms = sorted(replacements, key=lambda f: (-len(f), f))
        self._pattern = (
            re.compile("|".join(re.escape(f) for f in [REDACTED, *forms])) if forms else None
        )
        self._extended: dict[frozenset[str], Redactor] = {}
        self._ends: tuple[set[str], set[str]] | None = None  # built on first use (`_cut`)
        self._longest = 0
        self._learned: set[str] = set()

    @classmethod
    def for_config(cls, config: Config) -> Redactor:
        """The run's one redactor: ``${VAR}`` values and the strings they were substituted into,
        the targets' credential header values and base URL credentials."""
        secrets = list(config.secrets)
        shown = dict(config.secret_fields)
        secret_headers = set()
        targets = [config.old, config.new]
        if config.old_replica is not None:
            targets.append(config.old_replica)
        for target in targets:
            secrets += _credentials(target.headers)
            for name, value in target.headers:
                if value in shown:
                    secret_headers.add(name)
            url = target.base_url
            if "@" in url:
                secrets += userinfo_secrets(url)
                shown[url] = _shown_url(shown.get(url, url))
        return cls(secrets, shown=shown, secret_headers=secret_headers)

    def for_case(self, result: CaseResult) -> Redactor:
        """This redactor plus the credentials one case sent and got (`credentials_of`)."""
        return self.extended(credentials_of(result))

    def extended(self, secrets: Iterable[str]) -> Redactor:
        """This redactor plus more secrets (itself when there is nothing new); memoized."""
        more = frozenset(s for s in secrets if s) - self.secrets
        if not more:
            return self
        found = self._extended.get(more)
        if found is None:
            if len(self._extended) >= 256:  # a case's cookies are often the same as the last
                self._extended.clear()
            found = self._extended[more] = Redactor(
                self.secrets | more, shown=self.shown, secret_headers=self.secret_headers
            )
        return found

    @property
    def active(self) -> bool:
        return bool(self.secrets or self.shown)

    # -- text -----------------------------------------------------------------------------

    def _replace(self, match: re.Match[str]) -> str:
        return self._replacements.get(match.group(0), REDACTED)

    def text(self, text: str) -> str:
        """A free-text value (a message, a header value, an excerpt): every secret of
        `MIN_SECRET` characters or more in it redacted; a value that *is* a short secret too."""
        if text in self.short:
            return REDACTED
        if self._pattern is None:
            return text
        return self._pattern.sub(self._replace, text)

    def config_text(self, text: str) -> str:
        """A value from the configuration (a base URL, a header value): as it is shown."""
        found = self.shown.get(text)
        if found is not None:
            return found
        if "@" in text and "://" in text:
            return self.text(_shown_url(text))
        return self.text(text)

    def fragment(self, text: str) -> str:
        """`text`, plus a secret cut in half where the text was cut: at either end."""
        text = self.text(text)
        if self._pattern is None or text == REDACTED:
            return text
        return self._cut(self._cut(text, head=True), head=False)

    def _cut(self, text: str, head: bool) -> str:
        """Redact a secret's proper prefix ending ``text`` (or proper suffix starting it)."""
        if self._ends is None:
            # Cut values are raw body text or JSON text: those two forms are enough here.
            forms = {
                f
                for s in self.secrets - self.short
                for f in (s, json.dumps(s, ensure_ascii=False)[1:-1])
            }
            self._longest = max((len(f) for f in forms), default=0)
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
        """JSON data a target sent (a body value, an expected or actual value): every string
        redacted, object keys included, and whatever sits under a key naming a secret-carrying
        header blanked; a copy."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {
                self.text(str(k)): (
                    REDACTED
                    if str(k).lower() in self.secret_headers and v is not None
                    else self.value(v)
                )
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        if isinstance(value, int | float) and not isinstance(value, bool) and self.secrets:
            shown = repr(value)  # a numeric secret sent back as a JSON number
            if shown in self.short or self.text(shown) != shown:
                return REDACTED
        return value

    def _blank(self, kind: str, location: str) -> bool:
        """A difference whose values are a secret-carrying header's (or its echo in a body)."""
        if kind == "header":
            return location.lower() in self.secret_headers
        if kind == "upstream":  # upstream.header.NAME: what a proxy forwarded to the origin
            _, marker, name = location.rpartition(".header.")
            return bool(marker) and name.lower() in self.secret_headers
        return kind == "body" and _last_key(location) in self.secret_headers

    def difference(self, diff: Difference) -> Difference:
        if self._blank(diff.kind, diff.location):
            old = None if diff.old is None else REDACTED
            new = None if diff.new is None else REDACTED
        elif diff.kind == "body" and diff.location in ("text", "$"):  # excerpts: may be cut
            old, new = self._excerpt(diff.old), self._excerpt(diff.new)
        else:
            old, new = self.value(diff.old), self.value(diff.new)
        location = self.text(diff.location)
        note = self.text(diff.note) if diff.note else diff.note
        if (old, new, location, note) == (diff.old, diff.new, diff.location, diff.note):
            return diff
        return replace(diff, location=location, old=old, new=new, note=note)

    def _excerpt(self, value: Any) -> Any:
        return self.fragment(value) if isinstance(value, str) else self.value(value)

    def failure(self, failure: ExpectFailure) -> ExpectFailure:
        what = failure.what
        kind, _, where = what.partition(" ")
        if (kind == "header" and where.lower() in self.secret_headers) or (
            kind == "json" and self._blank("body", where)
        ):
            expected = None if failure.expected is None else REDACTED
            actual = None if failure.actual is None else REDACTED
        else:
            expected = self.value(failure.expected)
            actual = self._excerpt(failure.actual)  # "not JSON: <excerpt>"
        return replace(failure, what=self.text(what), expected=expected, actual=actual)

    def exchange(self, exchange: Exchange) -> Exchange:
        if isinstance(exchange, TransportError):
            message = self.text(exchange.message)
            return exchange if message == exchange.message else replace(exchange, message=message)
        reason = self.text(exchange.reason) if exchange.reason else exchange.reason
        return exchange if reason == exchange.reason else replace(exchange, reason=reason)

    def _acceptance(self, acceptance: Acceptance) -> Acceptance:
        return replace(acceptance, difference=self.difference(acceptance.difference))

    def result(self, result: CaseResult) -> CaseResult:
        """The redacted copy of a judged case (itself when there is nothing to redact): every
        field a target, the configuration or an error could have put a secret in. Headers and
        bodies of the exchanges are left as received - no output shows them but through these
        fields."""
        plain = not (result.differences or result.failures or result.noise or result.accepted)
        if plain and isinstance(result.old, Response) and isinstance(result.new, Response):
            if not self.active:
                return result
            old, new = self.exchange(result.old), self.exchange(result.new)  # reasons only
            if old is result.old and new is result.new:
                return result
            return replace(result, old=old, new=new)
        credentials = credentials_of(result)
        self._learn(credentials)
        redactor = self.extended(credentials)
        return replace(
            result,
            old=redactor.exchange(result.old),
            new=redactor.exchange(result.new),
            old_replica=(
                None if result.old_replica is None else redactor.exchange(result.old_replica)
            ),
            differences=tuple(redactor.difference(d) for d in result.differences),
            failures=tuple(redactor.failure(f) for f in result.failures),
            noise=tuple(redactor.difference(d) for d in result.noise),
            accepted=tuple(redactor._acceptance(a) for a in result.accepted),
        )

    def _learn(self, credentials: list[str]) -> None:
        """Remember a case's credential values (bounded): the gate document's learned noise
        was learned before redaction and may show them."""
        room = MAX_LEARNED - len(self._learned)
        if room > 0 and credentials:
            self._learned.update(credentials[:room])

    def gate(self, doc: dict[str, Any]) -> dict[str, Any]:
        """The gate document with its values redacted (a copy; keys never change): the targets'
        URLs as configured, the noise learned from old-vs-old responses (learned before
        redaction), and every other free-text value (the reason, wherever it is repeated).
        Flamingo's own words (`_OWN_KEYS`: the verdict, names, ids, times) and the signatures
        (built from redacted records) are kept as they are."""
        redacted: dict[str, Any] = self.extended(self._learned)._document(doc)
        return redacted

    def _document(self, value: Any) -> Any:
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for name, item in value.items():
                if name in _OWN_KEYS:
                    out[name] = item
                elif name == "targets" and isinstance(item, dict):
                    out[name] = {
                        k: self.config_text(v) if isinstance(v, str) else v for k, v in item.items()
                    }
                elif name == "noise" and isinstance(item, list):
                    out[name] = [self._noise_entry(entry) for entry in item]
                else:
                    out[name] = self._document(item)
            return out
        if isinstance(value, list):
            return [self._document(item) for item in value]
        if isinstance(value, str):
            return self.text(value)
        return value

    def _noise_entry(self, entry: Any) -> Any:
        if not isinstance(entry, dict):
            return entry
        blank = self._blank(str(entry.get("kind")), str(entry.get("location", "")))
        out = dict(entry)
        out["location"] = self.text(str(entry.get("location", "")))
        examples = entry.get("examples") or []
        out["examples"] = [REDACTED if blank else self.fragment(str(e)) for e in examples]
        if entry.get("context"):
            out["context"] = REDACTED if blank else self.fragment(str(entry["context"]))
        return out
