"""min_duration rounds (flamingo.rounds) with a fake clock: whole rounds, ids, no busy loop."""

from __future__ import annotations

from collections.abc import Iterator

from flamingo.model import Case
from flamingo.rounds import Rounds


def cases(n: int) -> Iterator[Case]:
    for i in range(n):
        yield Case(id=f"s::{i}", suite="s", name=str(i), template="s::t", method="GET", path="/")


class Clock:
    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_one_round_without_min_duration() -> None:
    rounds = Rounds(lambda: cases(3), None)
    assert [c.id for c in rounds] == ["s::0", "s::1", "s::2"]
    assert (rounds.rounds, rounds.handed_out) == (1, 3)


def test_rounds_until_min_duration_whole_rounds_and_round_ids() -> None:
    rounds = Rounds(lambda: cases(2), 2.5, clock=Clock(1.0))  # each check of the clock: +1 s
    ids = [c.id for c in rounds]
    assert ids == ["s::0", "s::1", "s::0@round2", "s::1@round2", "s::0@round3", "s::1@round3"]
    assert (rounds.rounds, rounds.handed_out) == (3, 6)
    assert len(set(ids)) == len(ids)


def test_an_empty_selection_is_one_empty_round_not_a_busy_loop() -> None:
    rounds = Rounds(lambda: cases(0), 3600.0, clock=Clock(0.0))
    assert list(rounds) == []
    assert rounds.rounds == 1
