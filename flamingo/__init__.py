"""flamingo: an end-to-end differential test harness for HTTP proxies.

One suite, two targets (``old`` and ``new``), one verdict. The pipeline is
``load -> expand -> send -> normalize -> compare -> judge -> report``; only
``send`` touches the network and only ``report`` writes files or the console.
The library entry point is `Session` (`flamingo.engine`): every front door runs through it.

The names below are imported on first use, so ``import flamingo`` (the inert pytest plugin
included) does not load the HTTP stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flamingo.engine import Observer, Run, RunOptions, RunStart, RunSummary, Selection, Session
    from flamingo.errors import FlamingoError, HarnessError, InputError

__version__ = "0.1.0"

_EXPORTS = {
    "FlamingoError": "flamingo.errors",
    "HarnessError": "flamingo.errors",
    "InputError": "flamingo.errors",
    "Observer": "flamingo.engine",
    "Run": "flamingo.engine",
    "RunOptions": "flamingo.engine",
    "RunStart": "flamingo.engine",
    "RunSummary": "flamingo.engine",
    "Selection": "flamingo.engine",
    "Session": "flamingo.engine",
}

__all__ = [  # kept equal to _EXPORTS (tests/test_engine.py)
    "FlamingoError",
    "HarnessError",
    "InputError",
    "Observer",
    "Run",
    "RunOptions",
    "RunStart",
    "RunSummary",
    "Selection",
    "Session",
    "__version__",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'flamingo' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
