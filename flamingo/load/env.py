"""``${VAR}`` substitution in targets.yaml: every string, before validation.

Substituted values become ``Config.secrets``; a substituted string is an ``_EnvText`` whose
messages show what was written (``${TOKEN}``), never the value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from flamingo.load.validate import (
    _At,
    _EnvText,
)
from flamingo.model import REDACTED
from flamingo.suite import (
    IDENT_RE,
)
from flamingo.yamlload import (
    YList,
    YMap,
    quote,
)

_ENV_RE = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")


class Substituted:
    """What substitution found in one targets.yaml: the secret values, and every string one was
    substituted into with how it is shown (``Config.secrets``, ``Config.secret_fields``)."""

    def __init__(self) -> None:
        self.secrets: list[str] = []
        self.fields: dict[str, str] = {}


def _substitute(text: str, env: Mapping[str, str], at: _At, found: Substituted) -> str:
    if "${" not in text:
        return text
    pieces: list[str] = []
    shown: list[str] = []  # the same pieces, a secret shown as REDACTED
    end = 0
    substituted = secret = False
    for match in _ENV_RE.finditer(text):
        pieces.append(text[end : match.start()])
        shown.append(text[end : match.start()])
        end = match.end()
        if match.group(0) == "$${":  # escaped: a literal "${"
            pieces.append("${")
            shown.append("${")
            continue
        inner = match.group(1)
        if inner is None:
            raise at.error(f"unterminated '${{' in {quote(text)} (write '$${{' for a literal)")
        name, sep, default = inner.partition(":-")
        if not IDENT_RE.fullmatch(name):
            raise at.error(
                f"invalid environment reference {quote(match.group(0))} "
                "(expected ${NAME} or ${NAME:-default})"
            )
        value = env.get(name)
        if value is None or (sep and value == ""):
            if not sep:
                raise at.plain(f"environment variable {name} is not set (used in {at.path})")
            value = default  # written in the file: not a secret
            shown.append(value)
        elif value:
            found.secrets.append(value)
            shown.append(REDACTED)
            secret = True
        pieces.append(value)
        substituted = True
    pieces.append(text[end:])
    shown.append(text[end:])
    result = "".join(pieces)
    if secret:
        # Also as validation may store it: stripped, and a base URL without its final "/".
        display = "".join(shown)
        for form, form_shown in (
            (result, display),
            (result.strip(), display.strip()),
            (result.rstrip("/"), display.rstrip("/")),
        ):
            if form:
                found.fields.setdefault(form, form_shown)
    if not substituted:
        return result
    marked = _EnvText(result)
    marked.raw = text
    marked.whole = bool(_ENV_RE.fullmatch(text)) and text.startswith("${")
    return marked


def _substitute_tree(node: Any, at: _At, env: Mapping[str, str], found: Substituted) -> None:
    if isinstance(node, YMap):
        for key, value in node.items():
            child = at.key(node, key)
            if isinstance(value, str):
                node[key] = _substitute(value, env, child, found)
            else:
                _substitute_tree(value, child, env, found)
    elif isinstance(node, YList):
        for index, value in enumerate(node):
            child = at.item(node, index)
            if isinstance(value, str):
                node[index] = _substitute(value, env, child, found)
            else:
                _substitute_tree(value, child, env, found)
