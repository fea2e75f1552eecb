"""User-supplied regular expressions, evaluated in linear time.

This module owns `Regex`: every regular expression a user writes (``compare.mask`` patterns,
``expect`` header regexes, the ``old``/``new`` regexes of accepted.yaml) is compiled here, once,
at load time, and then evaluated against every response. It is pure: no IO.

Why not ``re``: Python's engine backtracks, so a pattern such as ``(a+)+$`` over 34 ``a``
followed by ``!`` runs for minutes - in C, holding the GIL, so not even SIGINT or SIGTERM is
handled until it returns. Patterns come from files and responses come from the systems under
test; neither can be trusted to be benign together. RE2 (google-re2) matches in time linear in
the text, whatever the pattern. What it cannot do (backreferences such as ``\\1`` in a pattern,
lookahead/lookbehind, possessive quantifiers) is refused at load time with ``FILE:LINE``.

Differences from ``re`` worth knowing: ``\\d``, ``\\w``, ``\\s`` and ``\\b`` are ASCII-only, and
``$`` matches only at the very end of the text (use ``(?m)`` for line ends).

Replacement templates (``mask.replace``) are parsed here too: ``\\1`` .. ``\\99`` and ``\\g<1>`` /
``\\g<name>`` insert a group (an unmatched group inserts nothing), ``\\\\`` is one backslash and
``\\n``, ``\\r``, ``\\t`` are the control characters; any other backslash is an error.
"""

from __future__ import annotations

import re
from typing import Any

import re2

__all__ = ["Regex", "RegexError", "escape"]


def escape(text: str) -> str:
    """``text`` as a pattern that matches it literally."""
    escaped: str = re2.escape(text)
    return escaped


class RegexError(ValueError):
    """A pattern or replacement that cannot be used (the message says why)."""


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False  # errors come back as exceptions, not lines on stderr
    return options


_OPTIONS = _options()
#: What RE2 refuses that ``re`` accepts, in words a user can act on.
_UNSUPPORTED = (
    "not supported by the linear-time regex engine (RE2: no backreferences, no lookaround)"
)
_TEMPLATE = re.compile(r"\\(?:g<([^>]*)>|([0-9]{1,2})|(.))|([^\\]+)", re.DOTALL)
_ESCAPES = {"\\": "\\", "n": "\n", "r": "\r", "t": "\t"}

Piece = str | int  # literal text, or a group index


#: Texts up to this long have their substitutions remembered (header values repeat across cases:
#: content types, cache policies), up to `_CACHED` per pattern: RE2's Python wrapper costs ~2 µs
#: a call even when nothing matches, ~10x ``re``.
_SHORT = 256
_CACHED = 4096


class Regex:
    """A compiled RE2 pattern with ``search`` and ``sub``; equal when the patterns are."""

    __slots__ = ("_compiled", "_subs", "pattern")

    def __init__(self, pattern: str) -> None:
        try:
            # Compiling never matches, so ``re`` is safe here: it names a syntax error the way
            # Python users know it, before RE2 is asked what it supports.
            re.compile(pattern)
        except re.error as exc:
            raise RegexError(str(exc)) from None
        try:
            self._compiled: Any = re2.compile(pattern, _OPTIONS)
        except (re2.error, TypeError, ValueError) as exc:
            detail = exc.args[0] if exc.args else exc
            if isinstance(detail, bytes):
                detail = detail.decode("utf-8", "replace")
            raise RegexError(f"{_UNSUPPORTED}: {detail}") from None
        self.pattern = pattern
        self._subs: dict[tuple[tuple[Piece, ...], str], str] = {}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Regex) and other.pattern == self.pattern

    def __hash__(self) -> int:
        return hash(self.pattern)

    def __repr__(self) -> str:
        return f"Regex({self.pattern!r})"

    def search(self, text: str) -> bool:
        """Whether the pattern matches anywhere in ``text``."""
        subject = text.encode("ascii") if text.isascii() else text
        return self._compiled.search(subject) is not None

    def template(self, replacement: str) -> tuple[Piece, ...]:
        """``replacement`` parsed against this pattern's groups (`RegexError` when invalid)."""
        groups: int = self._compiled.groups
        names: dict[str, int] = dict(self._compiled.groupindex)
        pieces: list[Piece] = []
        position = 0
        while position < len(replacement):
            match = _TEMPLATE.match(replacement, position)
            if match is None:
                raise RegexError("a replacement cannot end with a single backslash")
            position = match.end()
            name, number, escaped, literal = match.groups()
            if literal is not None:
                pieces.append(literal)
            elif escaped is not None:
                if escaped not in _ESCAPES:
                    raise RegexError(f"bad escape \\{escaped} (a backslash is written \\\\)")
                pieces.append(_ESCAPES[escaped])
            else:
                ref = number if number is not None else name
                index = int(ref) if ref.isdigit() else names.get(ref, -1)
                if not 0 <= index <= groups or (number is not None and index == 0):
                    raise RegexError(
                        f"invalid group reference {ref} at position {match.start() + 1}"
                    )
                pieces.append(index)
        return tuple(pieces)

    def sub(self, template: tuple[Piece, ...], text: str) -> str:
        """Every match in ``text`` replaced by ``template`` (from `template`)."""
        if len(text) > _SHORT:
            return self._sub(template, text)
        key = (template, text)
        done = self._subs.get(key)
        if done is None:
            if len(self._subs) >= _CACHED:
                self._subs.clear()  # bounded; values that repeat come back at once
            done = self._subs[key] = self._sub(template, text)
        return done

    def _sub(self, template: tuple[Piece, ...], text: str) -> str:
        out: list[str] = []
        end = 0
        # ASCII text goes in as bytes: offsets are the same, and the wrapper skips mapping
        # UTF-8 offsets back to characters (~3x faster per call).
        ascii_ = text.isascii()
        for match in self._compiled.finditer(text.encode("ascii") if ascii_ else text):
            start = match.start()
            out.append(text[end:start])
            for piece in template:
                if isinstance(piece, str):
                    out.append(piece)
                else:
                    group = match.group(piece)
                    out.append((group.decode("ascii") if ascii_ else group) if group else "")
            end = match.end()
        if not out:
            return text
        out.append(text[end:])
        return "".join(out)
