"""The accepted-differences file schema (``accepted:`` in targets.yaml)."""

from __future__ import annotations

import os
from datetime import date
from typing import Any

from flamingo.load.validate import (
    Rule,
    _apply,
    _At,
    _check_keys,
    _describe,
    _list,
    _mapping,
    _non_empty_string,
    _regex,
)
from flamingo.model import (
    AcceptedRule,
)
from flamingo.yamlload import (
    parse_document,
    read_text,
)

__all__ = ["load_accepted", "parse_accepted"]

# --------------------------------------------------------------------------------------------
# accepted.yaml
# --------------------------------------------------------------------------------------------


def _glob(value: Any, at: _At) -> str:
    return _non_empty_string(value, at)


def _kind(value: Any, at: _At) -> str:
    if value not in ("status", "header", "body"):
        raise at.error(f"expected one of status, header, body, got {_describe(value)}")
    return str(value)


def _date(value: Any, at: _At) -> date:
    text = str(value) if isinstance(value, str | date) else None
    try:
        if text is None:
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        raise at.error(f"expected a date such as 2027-01-31, got {_describe(value)}") from None


_ACCEPTED_RULES: dict[str, Rule] = {
    "template": _glob,
    "kind": _kind,
    "location": _non_empty_string,
    "old": _regex,
    "new": _regex,
    "reason": _non_empty_string,
    "expires": _date,
}


def parse_accepted(text: str, file: str) -> tuple[AcceptedRule, ...]:
    """Validate the text of an accepted.yaml; ``file`` is only used in messages."""
    document = parse_document(text, file)
    root = _At(file, "", document.line, document.line)
    _check_keys(document, root, ("accepted",), required=("accepted",))
    entries_at = root.key(document, "accepted")
    entries = _list(document["accepted"], entries_at)
    rules: list[AcceptedRule] = []
    for index, entry in enumerate(entries):
        entry_at = entries_at.item(entries, index)
        mapping = _mapping(entry, entry_at)
        _check_keys(mapping, entry_at, tuple(_ACCEPTED_RULES), required=("location", "reason"))
        fields = _apply(mapping, entry_at, _ACCEPTED_RULES)
        fields.setdefault("template", "*")
        rules.append(AcceptedRule(index=index, source=f"{file}:{entry_at.line}", **fields))
    return tuple(rules)


def load_accepted(path: str | os.PathLike[str]) -> tuple[AcceptedRule, ...]:
    file = os.fspath(path)
    return parse_accepted(read_text(file), file)
