"""Difference signatures: what makes 2,000 cases with the same bug one line.

A signature is (request template, kind, generalized location, shape of the change). The location
is generalized over list positions (``$.items[3].id`` -> ``$.items[*].id``). The shape keeps the
values of status codes (``status 200 → 410``, categorical and few) and reduces every other change
to types (``header x-cache: present → absent``, ``$.role: string changed``, ``$.x: number →
absent``), so values that vary per case (ids, timestamps, names) never split one bug into
thousands of lines; reports show the concrete change of an example case beside it
(``"user" → "admin"``).

Pure: no IO, deterministic; the id is a short hash of the four parts, stable between runs.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from flamingo.compare import json_type
from flamingo.model import Difference

_INDEX = re.compile(r"\[\d+\]")
#: Example values longer than this are cut in descriptions.
MAX_EXAMPLE_CHARS = 80

SignatureKey = tuple[str, str, str, str]  # template, kind, location, shape


def generalize(location: str) -> str:
    """``$.items[3].id`` -> ``$.items[*].id``: list positions do not split a signature."""
    if "[" not in location:
        return location
    return _INDEX.sub("[*]", location)


def value_type(value: Any) -> str:
    """A difference value's JSON type, or "absent" (a key or header that is not there)."""
    return "absent" if value is None else json_type(value)


def change_shape(diff: Difference) -> str:
    """The shape of one difference: values for status codes, types for everything else."""
    if diff.kind == "status":
        return f"{diff.old} → {diff.new}"
    old, new = value_type(diff.old), value_type(diff.new)
    if diff.kind == "header":
        old, new = (
            ("absent" if diff.old is None else "present"),
            ("absent" if diff.new is None else "present"),
        )
    if old == new and old != "absent":
        return "changed" if diff.kind == "header" else f"{old} changed"
    return f"{old} → {new}"


def example_change(diff: Difference) -> str:
    """The concrete change of one example case: ``"user" → "admin"``."""

    def show(value: Any) -> str:
        if value is None:
            return "absent"
        text = json.dumps(value, ensure_ascii=False, default=str)
        return text if len(text) <= MAX_EXAMPLE_CHARS else text[: MAX_EXAMPLE_CHARS - 1] + "…"

    return f"{show(diff.old)} → {show(diff.new)}"


def signature_key(template: str, diff: Difference) -> SignatureKey:
    return (template, diff.kind, generalize(diff.location), change_shape(diff))


def signature_id(key: SignatureKey) -> str:
    digest = hashlib.blake2b("\x1f".join(key).encode(), digest_size=5).hexdigest()
    return f"sig-{digest}"


def describe(key: SignatureKey) -> str:
    """``header cache-control: "max-age=60" → "max-age=300"`` (the template is shown apart)."""
    _, kind, location, change = key
    if kind == "status":
        return f"status {change}"
    where = f"header {location}" if kind == "header" else location
    return f"{where}: {change}"
