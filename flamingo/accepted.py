"""Accepted differences: behaviour changes the team decided to ship.

In a migration every difference is a decision: stay bug-for-bug compatible, or ship the change
and tell who it affects. ``accepted.yaml`` (``accepted: FILE`` in targets.yaml) lists the ones
shipped on purpose:

    accepted:
      - template: "static-assets::get *"   # glob over the request template (suite::name)
        kind: header                      # optional: status | header | body
        location: cache-control           # header name, JSON path ($.a[*].b), status, text, bytes
        old: "max-age=60"                 # optional regex (search) on the old value
        new: "max-age=300"                # optional regex (search) on the new value
        reason: "longer caching, RFC-42"  # mandatory
        expires: 2027-01-31               # optional: the entry stops applying after this day

Theory of operation: a difference is accepted by the first entry (in file order) that matches it;
a case whose every remaining difference is accepted counts as ``match`` for the gate, its row
lists what was accepted, and gate.json totals count it under ``accepted``. Expired entries do not
apply and are reported; entries that matched nothing in the run are reported as stale.

Pure: the clock enters as the ``today`` argument; loading and validation live in `flamingo.load`.
"""

from __future__ import annotations

import json
from datetime import date
from fnmatch import fnmatchcase
from typing import Any

from flamingo.compare import is_unlisted
from flamingo.judge import set_aside
from flamingo.model import Acceptance, AcceptedRule, CaseResult, Difference
from flamingo.signature import generalize


def _value_text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _location_matches(rule: AcceptedRule, diff: Difference) -> bool:
    if rule.kind is not None and rule.kind != diff.kind:
        return False
    wanted = rule.location.lower() if diff.kind == "header" else rule.location
    return wanted in (diff.location, generalize(diff.location))


def rule_matches(rule: AcceptedRule, template: str, diff: Difference) -> bool:
    if is_unlisted(diff):
        return False  # stands for differences nobody has seen: never accepted
    if not fnmatchcase(template, rule.template) or not _location_matches(rule, diff):
        return False
    if rule.old is not None and not rule.old.search(_value_text(diff.old)):
        return False
    return rule.new is None or bool(rule.new.search(_value_text(diff.new)))


class AcceptedList:
    """The live entries of accepted.yaml and how often each was used in this run."""

    def __init__(self, rules: tuple[AcceptedRule, ...], today: date) -> None:
        self.rules = rules
        self.live = tuple(r for r in rules if not r.expired(today))
        self.expired = tuple(r for r in rules if r.expired(today))
        self.used = [0] * len(rules)

    def apply(self, result: CaseResult) -> CaseResult:
        if not self.live or not result.differences:
            return result
        template = result.case.template
        kept: list[Difference] = []
        accepted: list[Acceptance] = []
        for diff in result.differences:
            rule = next((r for r in self.live if rule_matches(r, template, diff)), None)
            if rule is None:
                kept.append(diff)
            else:
                self.used[rule.index] += 1
                accepted.append(Acceptance(diff, rule.index, rule.reason))
        if not accepted:
            return result
        return set_aside(result, kept, accepted=tuple(accepted))

    def stale(self) -> tuple[AcceptedRule, ...]:
        return tuple(r for r in self.live if self.used[r.index] == 0)

    def report(self) -> dict[str, Any]:
        def entry(rule: AcceptedRule) -> dict[str, Any]:
            row: dict[str, Any] = {
                "entry": rule.index,
                "source": rule.source,
                "template": rule.template,
                "location": rule.location,
                "reason": rule.reason,
            }
            if rule.expires is not None:
                row["expires"] = rule.expires.isoformat()
            return row

        return {
            "used": [
                {**entry(r), "differences": self.used[r.index]}
                for r in self.live
                if self.used[r.index]
            ],
            "expired": [entry(r) for r in self.expired],
            "stale": [entry(r) for r in self.stale()],
        }
