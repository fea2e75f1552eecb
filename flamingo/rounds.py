"""``min_duration``: the selected cases, sent again in rounds until enough time has passed.

This module owns `Rounds`, the case stream of a stage with ``min_duration``: round 1 is the
selection as it is; while less than ``min_duration`` seconds have passed when a round's last
case is handed out, another round starts. Every round is judged and tallied, so the gate
reflects all of them (a stage that is stable for five minutes, not for one pass).

A case of round N > 1 has the id ``ID@roundN``: ids stay unique in results.jsonl and junit.xml,
and the template (what noise learning, accepted differences and signatures key on) is the same.
Rounds are whole: a round that has started is finished, so every case weighs the same.
A selection with no case gives one (empty) round, never a busy loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace

from flamingo.model import Case

__all__ = ["Rounds", "round_id"]


def round_id(case_id: str, round_number: int) -> str:
    return case_id if round_number == 1 else f"{case_id}@round{round_number}"


class Rounds:
    """Iterate the cases of every round; `handed_out` and `rounds` say how many so far."""

    def __init__(
        self,
        cases: Callable[[], Iterator[Case]],
        min_duration: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cases = cases
        self.min_duration = min_duration
        self.clock = clock
        self.handed_out = 0
        self.rounds = 0

    def __iter__(self) -> Iterator[Case]:
        started = self.clock()
        while True:
            self.rounds += 1
            number = self.rounds
            in_round = 0
            for case in self.cases():
                in_round += 1
                self.handed_out += 1
                yield case if number == 1 else replace(case, id=round_id(case.id, number))
            if (
                in_round == 0
                or self.min_duration is None
                or self.clock() - started >= self.min_duration
            ):
                return
