"""The exception tree flamingo.errors draws is the one the code defines, raises and maps."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import flamingo
from flamingo import errors
from flamingo.cli import _failed, build_parser
from flamingo.errors import FlamingoError, HarnessError, InputError, ScrapeError, WorkerFailed

SOURCE = Path(flamingo.__file__).resolve().parent
#: A drawn node: its tree prefix, then the class name.
NODE = re.compile(r"^ {4}(?P<prefix>[ │├└─]*?)(?P<name>[A-Z]\w+)\b")


def drawn_tree() -> dict[str, str | None]:
    """Each class drawn in the module docstring -> the class drawn as its parent."""
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []  # (column of the name, name)
    for line in (errors.__doc__ or "").splitlines():
        match = NODE.match(line)
        if match is None:
            continue
        column = match.start("name")
        while stack and stack[-1][0] >= column:
            stack.pop()
        parents[match["name"]] = stack[-1][1] if stack else None
        stack.append((column, match["name"]))
    return parents


def test_the_drawn_tree_is_the_class_tree() -> None:
    tree = drawn_tree()
    assert tree == {
        "FlamingoError": None,
        "InputError": "FlamingoError",
        "HarnessError": "FlamingoError",
        "WorkerFailed": "HarnessError",
        "ScrapeError": "HarnessError",
    }
    for name, parent in tree.items():
        cls = getattr(errors, name)  # each drawn class exists
        assert cls.__bases__ == ((Exception,) if parent is None else (getattr(errors, parent),))
    defined = {
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, FlamingoError)
    }
    assert defined == set(tree) == set(errors.__all__)  # nothing defined and left undrawn


@pytest.mark.parametrize("name", ["InputError", "HarnessError", "WorkerFailed", "ScrapeError"])
def test_every_class_below_the_root_is_raised(name: str) -> None:
    raised = re.compile(rf"\b(raise|=) {name}\(")
    users = [
        path
        for path in SOURCE.rglob("*.py")
        if path.name != "errors.py" and raised.search(path.read_text())
    ]
    assert users, f"{name} is drawn in flamingo.errors but never raised"


def test_the_old_homes_name_the_same_classes() -> None:
    from flamingo import scrape, workers

    assert workers.WorkerFailed is WorkerFailed
    assert scrape.ScrapeError is ScrapeError


@pytest.mark.parametrize(
    ("error", "code", "printed"),
    [
        (InputError("bad", "t.yaml", 3), 2, "t.yaml:3: bad\n"),
        (HarnessError("stuck"), 3, "flamingo: stuck\n"),
        (WorkerFailed("send worker 0 crashed"), 3, "flamingo: send worker 0 crashed\n"),
        (ScrapeError("scraping x failed"), 3, "flamingo: scraping x failed\n"),
        (FlamingoError("other"), 3, "flamingo: other\n"),
    ],
)
def test_the_cli_maps_the_tree_to_exit_codes(
    error: FlamingoError, code: int, printed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = build_parser().parse_args(["list"])
    assert _failed(args, error) == code
    assert capsys.readouterr().err == printed
