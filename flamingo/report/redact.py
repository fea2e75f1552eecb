"""Secret redaction applied to every text flamingo writes (files, console).

Two sources of secrets: values substituted from ``${VAR}`` in targets.yaml (known at load time),
and the values of credential headers (Authorization, Proxy-Authorization, Cookie, Set-Cookie)
wherever a difference or failure carries them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

REDACTED = "[REDACTED]"
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is replaced whole.
        values = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(v) for v in values)) if values else None

    def text(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(REDACTED, text)

    def row(self, row: dict[str, Any]) -> dict[str, Any]:
        """Blank credential-header values in a result row's differences and failures."""
        for diff in row.get("differences", ()):
            if diff.get("kind") == "header" and diff.get("location") in SECRET_HEADERS:
                diff["old"] = None if diff["old"] is None else REDACTED
                diff["new"] = None if diff["new"] is None else REDACTED
        for failure in row.get("failures", ()):
            what = str(failure.get("what", ""))
            if what.startswith("header ") and what[7:] in SECRET_HEADERS:
                failure["expected"] = REDACTED
                failure["actual"] = None if failure["actual"] is None else REDACTED
        return row
