"""The one exception tree flamingo raises.

    FlamingoError
     ├── InputError          bad files or options: printed as ``FILE:LINE: message``, exit 2
     └── HarnessError        flamingo itself could not complete the run: exit 3
          ├── WorkerFailed   a send worker process died or crashed (flamingo.workers)
          └── ScrapeError    a target's metrics endpoint could not be read (flamingo.scrape)

The command line maps the tree to exit codes in one place (`flamingo.cli`): an `InputError` is
2, every other `FlamingoError` is 3. Inside a run the engine records a `HarnessError` as the
run's ``error`` reason (fail closed, never ``pass``), a `ScrapeError` included.

Transport failures of a target (refused, reset, timeout, TLS) are *not* exceptions: they are
data (`flamingo.model.TransportError`) that becomes the ``error`` outcome of a case. Library
exceptions are translated at the boundary that raised them with ``raise ... from exc``.
"""

from __future__ import annotations

__all__ = ["FlamingoError", "HarnessError", "InputError", "ScrapeError", "WorkerFailed"]


class FlamingoError(Exception):
    """Base class of every error flamingo raises on purpose."""


class InputError(FlamingoError):
    """A suite, targets file or command-line option is wrong. Nothing has been sent."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line

    def __str__(self) -> str:
        if self.file is None:
            return self.message
        if self.line is None:
            return f"{self.file}: {self.message}"
        return f"{self.file}:{self.line}: {self.message}"


class HarnessError(FlamingoError):
    """The harness could not finish judging (fail closed: the verdict is ``error``)."""


class WorkerFailed(HarnessError):
    """A send worker died or crashed: the run cannot be judged completely."""


class ScrapeError(HarnessError):
    """A metrics endpoint could not be read (the message names the target, never the URL,
    which may carry a secret)."""
