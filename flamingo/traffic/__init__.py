"""Suites from real traffic: ``flamingo import har`` and ``flamingo import access-log``.

Two steps, one module each:

* `flamingo.traffic.read` turns a HAR file or an access log (nginx ``combined`` or JSON lines)
  into `Observed` requests (method, raw request target, headers, body), reporting what it could
  not read;
* `flamingo.traffic.build` (pure) deduplicates them, groups them into templates by path shape
  (numbers, UUIDs, hex ids and varying query values become matrix axes), drops secrets, leaves
  out side-effecting methods unless asked, samples stratified by template, and renders a suite
  YAML that flamingo's own loader reads back.
"""

from __future__ import annotations

from flamingo.traffic.build import BuildOptions, Imported, build_suite
from flamingo.traffic.read import Observed, Reading, read_access_log, read_har

__all__ = [
    "BuildOptions",
    "Imported",
    "Observed",
    "Reading",
    "build_suite",
    "read_access_log",
    "read_har",
]
