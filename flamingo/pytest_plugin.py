"""A thin pytest adapter: flamingo suites collected and run as pytest items.

Inert unless ``--flamingo-targets FILE`` is given, so installing flamingo never changes other
projects' test runs. With it, every ``*.yaml``/``*.yml`` file whose top level has a ``suite:``
key is collected; each expanded case becomes one item that sends the case to both targets and
fails with the differences when the outcome is not ``match``. pytest-xdist (``-n``) then spreads
the cases over processes; ``-k`` and ``-m`` work as usual (suite tags are markers).

The collector calls load/expand, the item calls send and the pure core; `repr_failure` formats the
domain result and falls back to pytest's own for anything else (the shape of pytest's
"non-python tests" example).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flamingo.errors import InputError
from flamingo.model import CaseResult, Config
from flamingo.report.redact import Redactor, credentials_of
from flamingo.report.rows import describe_difference, describe_failure
from flamingo.send import Sender
from flamingo.upstream import RecordingOrigin


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("flamingo", "flamingo differential suites")
    group.addoption(
        "--flamingo-targets",
        metavar="FILE",
        default=None,
        help="collect flamingo suites (*.yaml with a 'suite:' key) and run them against the "
        "targets in FILE",
    )


def _config(session_config: pytest.Config) -> Config | None:
    cached: Config | None = getattr(session_config, "_flamingo_config", None)
    if cached is not None:
        return cached
    path = session_config.getoption("flamingo_targets")
    if not path:
        return None
    from flamingo.load import load_config

    try:
        loaded = load_config(path)
    except InputError as exc:
        raise pytest.UsageError(str(exc)) from None
    session_config._flamingo_config = loaded  # type: ignore[attr-defined]
    return loaded


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Collector | None:
    if file_path.suffix not in (".yaml", ".yml") or _config(parent.config) is None:
        return None
    try:
        head = file_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    if not any(line.startswith("suite:") for line in head.splitlines()):
        return None
    return SuiteFile.from_parent(parent, path=file_path)


class CaseMismatch(Exception):
    def __init__(self, result: CaseResult) -> None:
        super().__init__(result.outcome)
        self.result = result


class SuiteFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        from flamingo.expand import expand
        from flamingo.load import load_suites

        config = _config(self.config)
        assert config is not None
        try:
            suites = load_suites([self.path], max_cases=config.run.max_cases)
        except InputError as exc:
            raise self.CollectError(str(exc)) from None
        for case in expand(suites):
            item = CaseItem.from_parent(self, name=case.id.split("::", 1)[1], case=case)
            for tag in case.tags:
                item.add_marker(tag)
            yield item


class CaseItem(pytest.Item):
    def __init__(self, *, case: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.case = case

    def runtest(self) -> None:
        from flamingo.judge import judge_case

        config = _config(self.config)
        assert config is not None

        async def send() -> CaseResult:
            # With `upstream:`, each item runs the recording origin for its own exchange (so
            # under xdist only one worker can hold its port: the others fail closed).
            origin = RecordingOrigin.of(config, config.run)
            async with origin or contextlib.nullcontext():
                sender = Sender(config.old, config.new, config.run, origin=origin)
                try:
                    old, new = await sender.send_pair(self.case)
                finally:
                    await sender.aclose()
            return judge_case(self.case, old, new)

        result = asyncio.run(send())
        if result.outcome != "match":
            raise CaseMismatch(result)

    def repr_failure(
        self,
        excinfo: pytest.ExceptionInfo[BaseException],
        style: Any = None,
    ) -> str | Any:
        if isinstance(excinfo.value, CaseMismatch):
            result = excinfo.value.result
            lines = [f"{result.case.id}: {result.outcome}"]
            for name, exchange in (("old", result.old), ("new", result.new)):
                message = getattr(exchange, "message", None)
                if message is not None:
                    lines.append(f"  {name}: {exchange.kind}: {message}")  # type: ignore[union-attr]
            lines += [f"  {describe_failure(f)}" for f in result.failures]
            lines += [f"  {describe_difference(d)}" for d in result.differences]
            config = _config(self.config)
            redactor = Redactor.for_config(config) if config else Redactor()
            redactor = redactor.extended(credentials_of(result))
            return redactor.text("\n".join(lines))
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"flamingo case {self.case.id}"
