"""What a loaded suite is, and the ``{{ var }}`` template language its strings use.

This module owns the validated-but-unexpanded form of a suite (``Suite`` holding
``RequestSpec``s whose strings are still templates) and the few template helpers that both
``load`` (to check variables at load time) and ``expand`` (to render cases fast) need. It does no
IO and no validation of its own: ``flamingo.load`` only ever builds these from checked input.

Template rules: ``{{ name }}`` (spaces inside the braces optional) names a matrix variable; the
name is an identifier (letters, digits, ``_``). Anything else between braces is literal text, so
bodies that happen to contain ``{{`` are left alone. A matrix value is inserted as text (``true``
and ``false`` for booleans); a JSON string leaf that is *exactly* one placeholder takes the value
with its YAML type instead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from itertools import product
from typing import Any

from flamingo.model import CompareRules, Headers

__all__ = [
    "ExpectSpec",
    "HeaderExpectSpec",
    "Matrix",
    "RequestSpec",
    "Scalar",
    "Suite",
    "compile_format",
    "render",
    "scalar_text",
    "template_vars",
    "whole_var",
]

Scalar = str | int | float | bool
Matrix = tuple[tuple[str, tuple[Scalar, ...]], ...]  # (variable, values) in YAML order

VAR_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def template_vars(text: str) -> tuple[str, ...]:
    """Variable names used by ``text``, in order of first use."""
    return tuple(dict.fromkeys(match.group(1) for match in VAR_RE.finditer(text)))


def whole_var(text: str) -> str | None:
    """The variable name if ``text`` is exactly one placeholder, else None."""
    match = VAR_RE.fullmatch(text)
    return match.group(1) if match else None


def scalar_text(value: Scalar) -> str:
    """How a matrix value reads when it is inserted into a string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render(text: str, values: Mapping[str, str]) -> str:
    """Substitute placeholders from ``values`` (slow path, for load-time checks)."""
    return VAR_RE.sub(lambda match: values[match.group(1)], text)


def compile_format(text: str, index: Mapping[str, int]) -> str:
    """Turn a template into a ``str.format`` string taking the axis texts positionally.

    ``str.format`` runs in C, which is what keeps expanding 100k cases well under a second.
    """
    parts: list[str] = []
    end = 0
    for match in VAR_RE.finditer(text):
        parts.append(text[end : match.start()].replace("{", "{{").replace("}", "}}"))
        parts.append(f"{{{index[match.group(1)]}}}")
        end = match.end()
    parts.append(text[end:].replace("{", "{{").replace("}", "}}"))
    return "".join(parts)


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeaderExpectSpec:
    """One ``expect.headers`` entry, values still templates."""

    name: str  # lower-case
    equals: str | None = None
    regex: str | None = None  # matrix values are inserted re.escape()d
    absent: bool = False


@dataclass(frozen=True)
class ExpectSpec:
    status: tuple[int | str, ...] = ()  # a str is exactly one "{{ var }}" placeholder
    headers: tuple[HeaderExpectSpec, ...] = ()
    json: Any = None
    has_json: bool = False
    upstream_headers: tuple[HeaderExpectSpec, ...] = ()


@dataclass(frozen=True)
class RequestSpec:
    """One entry of ``requests:`` with the suite defaults merged in, strings unsubstituted.

    ``matrix`` is the effective matrix: the request's own ``matrix:`` if it has one, else the
    suite's, restricted to the variables this request actually uses (a request that uses no
    variable is one case, however big the suite matrix is).
    """

    name: str
    path: str
    line: int
    method: str = "GET"
    query: tuple[tuple[str, tuple[str, ...]], ...] = ()  # key -> values (repeated params)
    headers: Headers = ()
    json: Any = None
    has_json: bool = False
    body: str | None = None
    expect: ExpectSpec = ExpectSpec()
    matrix: Matrix = ()
    repeat: int = 1
    #: A raw request (``raw``/``raw_b64``/``raw_chunks``): text templates, bytes and pauses (s),
    #: sent instead of method/path/headers/body; ``path`` is then the first line's target.
    raw: tuple[str | bytes | float, ...] | None = None
    raw_idle: float | None = None
    raw_timeout: float | None = None

    @property
    def case_count(self) -> int:
        return math.prod(len(values) for _, values in self.matrix) * self.repeat

    def case_names(self) -> Iterator[str]:
        """Rendered names, one per matrix combination (not per repeat), in expansion order."""
        index = {var: i for i, (var, _) in enumerate(self.matrix)}
        if not template_vars(self.name):
            for _ in product(*(values for _, values in self.matrix)):
                yield self.name
            return
        fmt = compile_format(self.name, index).format
        axes = [tuple(scalar_text(value) for value in values) for _, values in self.matrix]
        for combo in product(*axes):
            yield fmt(*combo)

    def case_ids(self, suite: str) -> Iterator[str]:
        """Every case id this request expands to, in expansion order."""
        for name in self.case_names():
            base = f"{suite}::{name}"
            if self.repeat == 1:
                yield base
            else:
                for k in range(1, self.repeat + 1):
                    yield f"{base}#{k}"


@dataclass(frozen=True)
class Suite:
    """One suite document: validated, not yet expanded into cases."""

    name: str
    file: str
    line: int
    requests: tuple[RequestSpec, ...]
    tags: tuple[str, ...] = ()
    compare: CompareRules = field(default_factory=CompareRules)
    allow_side_effects: bool = False

    @property
    def case_count(self) -> int:
        return sum(request.case_count for request in self.requests)
