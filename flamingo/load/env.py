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
from flamingo.suite import (
    IDENT_RE,
)
from flamingo.yamlload import (
    YList,
    YMap,
    quote,
)

_ENV_RE = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")


def _substitute(text: str, env: Mapping[str, str], at: _At, secrets: list[str]) -> str:
    if "${" not in text:
        return text
    pieces: list[str] = []
    end = 0
    substituted = False
    for match in _ENV_RE.finditer(text):
        pieces.append(text[end : match.start()])
        end = match.end()
        if match.group(0) == "$${":  # escaped: a literal "${"
            pieces.append("${")
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
        elif value:
            secrets.append(value)
        pieces.append(value)
        substituted = True
    pieces.append(text[end:])
    result = "".join(pieces)
    if not substituted:
        return result
    marked = _EnvText(result)
    marked.raw = text
    marked.whole = bool(_ENV_RE.fullmatch(text)) and text.startswith("${")
    return marked


def _substitute_tree(node: Any, at: _At, env: Mapping[str, str], secrets: list[str]) -> None:
    if isinstance(node, YMap):
        for key, value in node.items():
            child = at.key(node, key)
            if isinstance(value, str):
                node[key] = _substitute(value, env, child, secrets)
            else:
                _substitute_tree(value, child, env, secrets)
    elif isinstance(node, YList):
        for index, value in enumerate(node):
            child = at.item(node, index)
            if isinstance(value, str):
                node[index] = _substitute(value, env, child, secrets)
            else:
                _substitute_tree(value, child, env, secrets)
