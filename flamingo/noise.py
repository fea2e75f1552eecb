"""Noise learning: what differs between two responses of the *old* system is not a regression.

Theory of operation (after Twitter's Diffy)
-------------------------------------------
With ``compare: { noise: auto }`` every case is sent a second time to ``old`` (or to
``targets.old_replica``). The old-vs-old differences are *observations*: per request template
(the suite request before matrix expansion) and per location, `NoiseModel` counts in how many
samples the location differed. A location is **noise** for a template when it differed in at
least ``noise_threshold`` of that template's old-vs-old samples so far — decided with counts,
not from one sample. Old-vs-new differences at noisy locations are left out of the comparison
and reported apart (`CaseResult.noise`); what remains decides the outcome.

Locations:

    kind     location                      learned from
    status   status                        status codes of the two old responses
    header   lower-case name               header values (after normalization)
    body     JSON path, list indices *     deepdiff of the two JSON bodies
    body     text~"CONTEXT"                text bodies aligned token by token (difflib):
                                           each changed run of tokens is a region, named by
                                           the (up to 3) unchanged tokens just before it

A text body is never noise as a whole: a body too large to align (`MAX_TEXT_TOKENS`) learns
nothing, so its differences stay differences.

Noise excuses only a new value that is *like the old variation* (`Variation`): every location
remembers the values it took on old (both old responses of each differing sample). A new value
seen on old is excused. A location whose values repeat - status codes always, and any location
with few distinct values for its observations (`Variation.categorical`: 200/503, HIT/MISS,
"ok"/"degraded") - excuses nothing else: a value never seen on old is a difference even where
old flaps. A location whose values are all different (ids, timestamps, tokens) excuses a new
value of the same JSON type and, for strings, made of the same character classes and of a
similar length: ``FAILED`` where old had random hex ids is still a difference.

Everything here is pure: the model is an accumulator of the observations it is given, and the
decisions depend only on those counts. The rows `entries()` returns feed gate.json and
``flamingo noise --suggest``.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from flamingo.compare import compare, is_unlisted
from flamingo.judge import set_aside
from flamingo.model import CaseResult, CompareRules, Difference, Exchange, Response
from flamingo.normalize import JsonNumber, header_value, normalize_body
from flamingo.shape import ID_SHAPES, TIME_SHAPES, TimeWindows, seconds, shape
from flamingo.signature import generalize, value_type

DEFAULT_THRESHOLD = 0.05
#: Old-vs-old samples a template needs before its cases are judged (the run's end releases all).
DEFAULT_MIN_SAMPLES = 10
#: Example values kept per noisy location (for suggestions).
MAX_EXAMPLES = 5
#: Text tokens: words, and every other character on its own.
_TOKEN = re.compile(r"\w+|\W", re.UNICODE)
#: Tokens of context that name a text region (and anchor a suggested mask).
CONTEXT_TOKENS = 3
#: Texts with more tokens than this are not aligned (difflib is quadratic in the worst case):
#: they learn no noise, and their differences are never excused.
MAX_TEXT_TOKENS = 20_000
#: Distinct old values remembered per location; a location with more is free-form for sure.
MAX_VALUES = 32
#: Values longer than this are remembered by a digest.
_LONG_VALUE = 200

NoiseKey = tuple[str, str]  # (kind, generalized location)

#: A timestamp of *now* on new has stopped when one new value met this many distinct old values
#: and old moved on by `STOPPED_S` seconds meanwhile (or new lags every one of them by that
#: much): a difference, however much the location varies on old. Two clocks read at the same
#: moment agree within a tick, so concurrent cases sharing one millisecond are not a stop.
CONSTANT_AFTER = 3
STOPPED_S = 2.0
#: A timestamp more than this far ahead of its own response's ``Date`` is a *lifetime* (an
#: ``Expires``, a token's ``expires_at``), not a timestamp of now: old's and new's must then stand
#: as far ahead of their own ``Date`` within `LIFETIME_TOLERANCE_S`, or the pair is a difference
#: - a cache lifetime cut from an hour to five minutes is a change, however "now"-like both
#: values look. The tolerance absorbs clock skew between the host that set ``Date`` and the one
#: that made the value; equal lifetimes read a second apart (a tick straddled) stay noise.
AHEAD_S = 60.0
LIFETIME_TOLERANCE_S = 60.0
#: Repeated cases (``#k``) whose last old response is kept, to see what changes over time.
MAX_REPEATS_TRACKED = 1_000
#: Bodies larger than this are not kept for that.
MAX_REPEAT_BODY = 64 * 1024
#: New values (and old values per new value) remembered per location for `CONSTANT_AFTER`.
MAX_PARTNERS = 64
_REPEAT = re.compile(r"#[0-9]+$")
#: The shape of a value that has none of the volatile shapes.
PLAIN = "plain"


def _value_key(value: Any) -> str:
    """A value as a comparable string, type-tagged ("1" and 1 are different values)."""
    if value is None:
        key = "absent"
    elif isinstance(value, JsonNumber):
        key = "n:" + str(value)
    elif isinstance(value, str):
        key = "s:" + value
    elif isinstance(value, bool):
        key = "b:" + str(value)
    elif isinstance(value, int | float):
        key = "n:" + repr(value)
    else:
        key = "j:" + json.dumps(value, sort_keys=True, default=str)
    if len(key) > _LONG_VALUE:
        key = "h:" + hashlib.blake2b(key.encode("utf-8", "surrogatepass")).hexdigest()
    return key


def _char_class(char: str) -> str:
    """Digits, hex letters and other letters (by case) are classes; anything else is itself."""
    if "0" <= char <= "9":
        return "0"
    if "a" <= char <= "f":
        return "a"
    if "g" <= char <= "z":
        return "g"
    if "A" <= char <= "F":
        return "A"
    if "G" <= char <= "Z":
        return "G"
    if char.isalpha():
        return "L" if char.isupper() else "l"
    return char


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and not isinstance(value, JsonNumber)


@dataclass
class Variation:
    """The values one location took on old: enough to tell whether a new value is like them."""

    observed: int = 0  # values recorded (two per differing sample)
    values: set[str] = field(default_factory=set)  # `_value_key`s, at most MAX_VALUES
    overflow: bool = False  # more distinct values than MAX_VALUES were seen
    types: set[str] = field(default_factory=set)
    classes: set[str] = field(default_factory=set)  # `_char_class`es of string values
    shortest: int = -1  # string lengths (-1: no string seen)
    longest: int = -1

    def record(self, value: Any) -> None:
        self.observed += 1
        self._add_key(_value_key(value))
        self.types.add(value_type(value))
        if _is_text(value):
            self.classes.update(_char_class(c) for c in value)
            self._add_length(len(value), len(value))

    def _add_key(self, key: str) -> None:
        if key in self.values:
            return
        if len(self.values) < MAX_VALUES:
            self.values.add(key)
        else:
            self.overflow = True

    def _add_length(self, shortest: int, longest: int) -> None:
        self.shortest = shortest if self.shortest < 0 else min(self.shortest, shortest)
        self.longest = max(self.longest, longest)

    def categorical(self, kind: str) -> bool:
        """Few values that repeat (or a status code): only values seen on old are excused."""
        if kind == "status":
            return True
        distinct = len(self.values)
        return (
            not self.overflow
            and distinct < self.observed
            and distinct <= max(2, self.observed // 4)
        )

    def excuses(self, kind: str, value: Any) -> bool:
        """Is ``value`` (a new response's) like what this location took on old?"""
        if _value_key(value) in self.values:
            return True
        if self.categorical(kind) or value_type(value) not in self.types:
            return False
        if not _is_text(value):
            return True
        if self.shortest < 0 or not {_char_class(c) for c in value} <= self.classes:
            return False
        return self.shortest // 2 <= len(value) <= max(2 * self.longest, self.longest + 8)

    def absorb(self, other: Variation) -> None:
        """Add another model's record of the same location (`flamingo.merge`)."""
        self.observed += other.observed
        for key in sorted(other.values):
            self._add_key(key)
        self.overflow = self.overflow or other.overflow
        self.types |= other.types
        self.classes |= other.classes
        if other.shortest >= 0:
            self._add_length(other.shortest, other.longest)

    def view(self) -> dict[str, Any]:
        """As JSON data (partial.json), sorted so that equal variations give equal documents."""
        return {
            "observed": self.observed,
            "values": sorted(self.values),
            "overflow": self.overflow,
            "types": sorted(self.types),
            "classes": sorted(self.classes),
            "shortest": self.shortest,
            "longest": self.longest,
        }

    @classmethod
    def from_view(cls, data: Any) -> Variation:
        """The inverse of `view`; ValueError when ``data`` is not one."""
        try:
            return cls(
                observed=int(data["observed"]),
                values={str(v) for v in data["values"]},
                overflow=bool(data["overflow"]),
                types={str(t) for t in data["types"]},
                classes={str(c) for c in data["classes"]},
                shortest=int(data["shortest"]),
                longest=int(data["longest"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a noise variation: {exc!r}") from None


@dataclass
class NoiseStat:
    differing: int = 0
    examples: list[str] = field(default_factory=list)
    context: str = ""  # text regions: the tokens just before the region
    variation: Variation = field(default_factory=Variation)
    #: What time and shape taught (`flamingo.shape`): the shapes old values took here...
    shapes: set[str] = field(default_factory=set)
    over_time: int = 0  # ...how often it changed between repeats of one case, sent over time
    timely: int = 0  # ...old-vs-new differences where both were timestamps of now
    time_shape: str = ""  # ...and which kind of timestamp
    lifetimes: int = 0  # ...old-vs-old samples whose lifetimes differed (`lifetime_changed`)
    #: new value -> (its epoch seconds, the distinct old epoch seconds it differed from)
    partners: dict[str, tuple[float, set[float]]] = field(default_factory=dict)


@dataclass(frozen=True)
class NoiseEntry:
    template: str
    kind: str
    location: str
    differing: int
    samples: int
    examples: tuple[str, ...]
    context: str
    evidence: str = ""  # what it was learned from: old-vs-old counts, time, shape

    @property
    def rate(self) -> float:
        return self.differing / self.samples if self.samples else 0.0


def noise_key(diff: Difference) -> NoiseKey:
    return diff.kind, generalize(diff.location)


def _text(response: Response, rules: CompareRules) -> str | None:
    body = normalize_body(response.body, header_value(response.headers, "content-type"), rules)
    return body.value if body.kind == "text" else None


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


@dataclass(frozen=True)
class TextRegion:
    """A changed run of tokens between two texts, named by the unchanged tokens before it."""

    context: str
    old: str
    new: str

    @property
    def location(self) -> str:
        return "text~" + json.dumps(self.context, ensure_ascii=False)


def _glue(token: str) -> bool:
    # One punctuation token between two changed runs belongs to them: the '-' of a uuid, the
    # '+' and '/' of base64. Spaces and words keep runs apart.
    return len(token) == 1 and not token.isalnum() and not token.isspace() and token != "_"


def text_regions(a: str, b: str) -> list[TextRegion] | None:
    """The changed regions between two texts, aligned token by token; None when either text
    has more than `MAX_TEXT_TOKENS` tokens (too large to align)."""
    ta, tb = _tokens(a), _tokens(b)
    if len(ta) > MAX_TEXT_TOKENS or len(tb) > MAX_TEXT_TOKENS:
        return None
    matcher = difflib.SequenceMatcher(None, ta, tb, autojunk=False)
    spans: list[list[int]] = []  # [context start, i1, i2, j1, j2]
    equal_start = 0
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            equal_start = i1
        elif spans and spans[-1][2] + 1 == i1 and _glue(ta[i1 - 1]):
            spans[-1][2], spans[-1][4] = i2, j2
        else:
            spans.append([max(equal_start, i1 - CONTEXT_TOKENS), i1, i2, j1, j2])
    return [
        TextRegion("".join(ta[start:i1]), "".join(ta[i1:i2]), "".join(tb[j1:j2]))
        for start, i1, i2, j1, j2 in spans
    ]


class NoiseModel:
    """Per-template counts of old-vs-old differences (a pure accumulator)."""

    def __init__(
        self, threshold: float = DEFAULT_THRESHOLD, windows: TimeWindows | None = None
    ) -> None:
        self.default_threshold = threshold
        #: When the values compared were made (the run's time, a recording's): data, not a clock.
        self.windows = windows or TimeWindows()
        self.samples: dict[str, int] = {}
        self.stats: dict[str, dict[NoiseKey, NoiseStat]] = {}
        self.repeats: dict[str, int] = {}  # template -> repeat-to-repeat samples seen
        self._last_old: dict[str, Response] = {}  # case id without #k -> its last old answer

    def shape(self, value: Any) -> str:
        return shape(value, self.windows) or PLAIN

    def observe(self, template: str, old: Response, replica: Response, rules: CompareRules) -> None:
        """Record one old-vs-old sample of ``template``."""
        self.samples[template] = self.samples.get(template, 0) + 1
        stats = self.stats.setdefault(template, {})
        seen: set[NoiseKey] = set()  # a sample counts once per location ($.items[*].t)
        dates = _dates_of(old, replica)
        for diff in compare(old, replica, rules):
            if diff.kind == "body" and diff.location == "text":
                self._observe_text(stats, old, replica, rules, diff)
                continue
            stat, first, (kind, replica_kind) = self._note(stats, seen, diff)
            if first:
                stat.differing += 1
                if (
                    kind in TIME_SHAPES
                    and replica_kind == kind
                    and lifetime_changed(diff, kind, *dates())
                ):
                    stat.lifetimes += 1  # old's own lifetimes vary here: not a change on new
            if len(stat.examples) < MAX_EXAMPLES and diff.old is not None:
                stat.examples.append(str(diff.old))

    def _note(
        self, stats: dict[NoiseKey, NoiseStat], seen: set[NoiseKey], diff: Difference
    ) -> tuple[NoiseStat, bool, tuple[str, str]]:
        """The stat of ``diff``'s location, with both (old) values and their shapes recorded;
        True when this is the sample's first difference there (a sample counts once per
        location); the two shapes."""
        key = noise_key(diff)
        stat = stats.setdefault(key, NoiseStat())
        stat.variation.record(diff.old)
        stat.variation.record(diff.new)
        shapes = self.shape(diff.old), self.shape(diff.new)
        stat.shapes.update(shapes)
        first = key not in seen
        seen.add(key)
        return stat, first, shapes

    def _observe_text(
        self,
        stats: dict[NoiseKey, NoiseStat],
        old: Response,
        replica: Response,
        rules: CompareRules,
        diff: Difference,
    ) -> None:
        a, b = _text(old, rules), _text(replica, rules)
        regions = text_regions(a, b) if a is not None and b is not None else None
        if regions is None:
            return  # never the whole body: a text too large to align learns nothing
        seen: set[str] = set()
        for region in regions:
            location = region.location
            stat = stats.setdefault(("body", location), NoiseStat(context=region.context))
            if location not in seen:
                seen.add(location)
                stat.differing += 1
            stat.variation.record(region.old)
            stat.variation.record(region.new)
            if len(stat.examples) < MAX_EXAMPLES:
                stat.examples.append(region.old)

    def observe_repeat(
        self, case_id: str, template: str, old: Response, rules: CompareRules
    ) -> None:
        """The same case sent again later (``#k``): what changed between its old answers
        changes over time. Kept apart from the old-vs-old counts: it is evidence about shapes
        (an id that changes per request), not a licence for any value to differ."""
        if not _REPEAT.search(case_id):
            return
        base = _REPEAT.sub("", case_id)
        previous = self._last_old.get(base)
        if len(old.body) <= MAX_REPEAT_BODY and (
            previous is not None or len(self._last_old) < MAX_REPEATS_TRACKED
        ):
            self._last_old[base] = old
        if previous is None:
            return
        self.repeats[template] = self.repeats.get(template, 0) + 1
        stats = self.stats.setdefault(template, {})
        seen: set[NoiseKey] = set()
        for diff in compare(previous, old, rules):
            if diff.kind == "body" and diff.location == "text":
                continue  # text regions are aligned per old-vs-old pair only
            stat, first, _ = self._note(stats, seen, diff)
            if first:
                stat.over_time += 1

    def observe_new(self, template: str, differences: Iterable[Difference]) -> None:
        """Old-vs-new differences where both values are timestamps of now: counted (what was
        learned from time), and paired, so a new timestamp that stopped moving shows."""
        for diff in differences:
            if diff.kind == "body" and diff.location == "text":
                continue
            kind = self.shape(diff.old)
            if kind not in TIME_SHAPES or self.shape(diff.new) != kind:
                continue
            stat = self.stats.setdefault(template, {}).setdefault(noise_key(diff), NoiseStat())
            stat.timely += 1
            stat.time_shape = stat.time_shape or kind
            old_s, new_s = seconds(diff.old, kind), seconds(diff.new, kind)
            if old_s is None or new_s is None:
                continue
            entry = stat.partners.get(_value_key(diff.new))
            if entry is None:
                if len(stat.partners) >= MAX_PARTNERS:
                    continue
                entry = stat.partners[_value_key(diff.new)] = (new_s, set())
            if len(entry[1]) < MAX_PARTNERS:
                entry[1].add(old_s)

    def stopped(self, template: str, key: NoiseKey, new: Any) -> bool:
        """``new`` (a timestamp) stood still while old's moved on (`CONSTANT_AFTER`)."""
        stat = self.stats.get(template, {}).get(key)
        entry = stat.partners.get(_value_key(new)) if stat is not None else None
        if entry is None or len(entry[1]) < CONSTANT_AFTER:
            return False
        new_s, olds = entry
        moved = max(olds) - min(olds) >= STOPPED_S
        lags = min(abs(old - new_s) for old in olds) >= STOPPED_S
        return moved or lags

    def decide(
        self,
        template: str,
        diff: Difference,
        threshold: float | None = None,
        dates: Callable[[], tuple[float | None, float | None]] | None = None,
    ) -> bool:
        """Is this old-vs-new difference noise? (every source of evidence, one place)

        1. Both values are the same kind of timestamp of *now* (inside the time windows):
           noise without any count - unless new's has stopped moving (`stopped`), or they are
           lifetimes that differ (`lifetime_changed`; ``dates``: the epoch seconds of old's and
           new's ``Date`` header, asked for only here) where old's own lifetimes never did.
        2. Where old's values had a volatile shape (timestamps, ids), a new value of a shape
           old never had (null, "", a constant from 1970) is a difference: a change of shape.
        3. Otherwise the old-vs-old counts decide (`excuses`: counts and the old variation).
        4. An id of the same shape as old's, at a location seen changing (between two old
           answers, or between repeats over time), is noise even below the count threshold.
        """
        key = noise_key(diff)
        old_shape, new_shape = self.shape(diff.old), self.shape(diff.new)
        stat = self.stats.get(template, {}).get(key)
        if old_shape in TIME_SHAPES and new_shape == old_shape:
            if (
                dates is not None
                and not (stat is not None and stat.lifetimes)
                and lifetime_changed(diff, old_shape, *dates())
            ):
                return False
            return not self.stopped(template, key, diff.new)
        volatile = stat.shapes & (TIME_SHAPES | ID_SHAPES) if stat is not None else set()
        if volatile and new_shape not in stat.shapes:  # type: ignore[union-attr]
            return False
        if self.excuses(template, key, diff.new, threshold):
            return True
        return (
            stat is not None
            and old_shape in ID_SHAPES
            and new_shape == old_shape
            and bool(stat.differing or stat.over_time)
        )

    def evidence(self, template: str, key: NoiseKey) -> str:
        """What the model learned about one location, and from which source."""
        stat = self.stats.get(template, {}).get(key)
        if stat is None:
            return ""
        parts = []
        if stat.differing:
            parts.append(f"old vs old: {stat.differing} of {self.samples.get(template, 0)}")
        if stat.over_time:
            parts.append(f"over time: {stat.over_time} of {self.repeats.get(template, 0)} repeats")
        if stat.timely:
            parts.append(f"time: {stat.timely} x both {stat.time_shape} of now")
        if stat.lifetimes:
            parts.append(f"lifetimes differ on old: {stat.lifetimes}")
        shapes = sorted(stat.shapes - {PLAIN})
        if shapes:
            parts.append(f"old shapes: {'/'.join(shapes)}")
        return "; ".join(parts)

    def is_noise(self, template: str, key: NoiseKey, threshold: float | None = None) -> bool:
        samples = self.samples.get(template, 0)
        stat = self.stats.get(template, {}).get(key)
        if not samples or stat is None:
            return False
        limit = self.default_threshold if threshold is None else threshold
        return stat.differing >= limit * samples

    def excuses(
        self, template: str, key: NoiseKey, value: Any, threshold: float | None = None
    ) -> bool:
        """``key`` is noise for ``template`` and ``value`` (new's) is like its old variation."""
        if not self.is_noise(template, key, threshold):
            return False
        return self.stats[template][key].variation.excuses(key[0], value)

    def entries(self, threshold: float | None = None) -> list[NoiseEntry]:
        """Every location that is noise now, most frequent first (stable order)."""
        rows: list[NoiseEntry] = []
        for template, stats in self.stats.items():
            samples = self.samples.get(template, 0)
            for (kind, location), stat in stats.items():
                if stat.timely or self.is_noise(template, (kind, location), threshold):
                    rows.append(
                        NoiseEntry(
                            template,
                            kind,
                            location,
                            stat.differing,
                            samples,
                            tuple(stat.examples),
                            stat.context,
                            self.evidence(template, (kind, location)),
                        )
                    )
        rows.sort(key=lambda e: (-e.differing, e.template, e.kind, e.location))
        return rows

    # -- the model as a record, and models added together (`flamingo.merge`) ----------------

    def state(self) -> NoiseState:
        """Every observation (noisy or not yet), as a record another model can `absorb`."""
        return NoiseState(
            samples=tuple(self.samples.items()),
            stats=tuple(
                NoiseObservation(
                    template,
                    kind,
                    location,
                    s.differing,
                    tuple(s.examples),
                    s.context,
                    s.variation.view(),
                    tuple(sorted(s.shapes)),
                    s.over_time,
                    s.timely,
                    s.time_shape,
                    s.lifetimes,
                )
                for template, stats in self.stats.items()
                for (kind, location), s in stats.items()
            ),
            repeats=tuple(self.repeats.items()),
        )

    def absorb(self, state: NoiseState) -> None:
        """Add another model's observations: the counts add up, so what is noise is decided as
        if one model had seen every sample (examples: the first `MAX_EXAMPLES` in order)."""
        for template, samples in state.samples:
            self.samples[template] = self.samples.get(template, 0) + samples
        for template, repeats in state.repeats:
            self.repeats[template] = self.repeats.get(template, 0) + repeats
        for row in state.stats:
            stats = self.stats.setdefault(row.template, {})
            stat = stats.setdefault((row.kind, row.location), NoiseStat())
            stat.differing += row.differing
            stat.variation.absorb(Variation.from_view(row.variation))
            stat.examples.extend(row.examples[: MAX_EXAMPLES - len(stat.examples)])
            stat.context = stat.context or row.context
            stat.shapes.update(row.shapes)
            stat.over_time += row.over_time
            stat.timely += row.timely
            stat.time_shape = stat.time_shape or row.time_shape
            stat.lifetimes += row.lifetimes


@dataclass(frozen=True)
class NoiseObservation:
    """How often one location of one template differed between two old responses."""

    template: str
    kind: str
    location: str
    differing: int
    examples: tuple[str, ...] = ()
    context: str = ""
    variation: dict[str, Any] = field(default_factory=lambda: Variation().view())
    shapes: tuple[str, ...] = ()  # the shapes old values took (`flamingo.shape`)
    over_time: int = 0  # changed between repeats of one case sent over time
    timely: int = 0  # old-vs-new differences where both were timestamps of now
    time_shape: str = ""
    lifetimes: int = 0  # old-vs-old samples whose lifetimes differed


@dataclass(frozen=True)
class NoiseState:
    """A `NoiseModel`'s counts as plain data: samples per template and every observation."""

    samples: tuple[tuple[str, int], ...] = ()
    stats: tuple[NoiseObservation, ...] = ()
    repeats: tuple[tuple[str, int], ...] = ()  # repeat-to-repeat samples per template


def _text_is_noise(
    result: CaseResult, model: NoiseModel, rules: CompareRules, threshold: float | None
) -> bool:
    old, new = result.old, result.new
    assert isinstance(old, Response) and isinstance(new, Response)
    template = result.case.template
    a, b = _text(old, rules), _text(new, rules)
    regions = text_regions(a, b) if a is not None and b is not None else None
    if not regions:
        return False
    return all(
        model.excuses(template, ("body", region.location), region.new, threshold)
        for region in regions
    )


def lifetime_changed(
    diff: Difference, kind: str, old_date: float | None, new_date: float | None
) -> bool:
    """Do two timestamps of time shape ``kind`` stand at different distances ahead of their own
    responses' ``Date`` (`AHEAD_S`, `LIFETIME_TOLERANCE_S`)? False when a ``Date`` is missing
    or unreadable: then nothing says how far ahead a value is."""
    if old_date is None or new_date is None:
        return False
    old_s, new_s = seconds(diff.old, kind), seconds(diff.new, kind)
    if old_s is None or new_s is None:
        return False
    old_ahead, new_ahead = old_s - old_date, new_s - new_date
    return max(old_ahead, new_ahead) > AHEAD_S and abs(old_ahead - new_ahead) > LIFETIME_TOLERANCE_S


def _date(exchange: Exchange | None) -> float | None:
    """Epoch seconds of a response's ``Date`` header, or None."""
    if not isinstance(exchange, Response):
        return None
    value = header_value(exchange.headers, "date")
    return seconds(value, "http-date") if value is not None else None


def _dates_of(
    old: Exchange | None, new: Exchange | None
) -> Callable[[], tuple[float | None, float | None]]:
    """The two responses' ``Date`` in epoch seconds, parsed on the first call only (most
    differences never ask)."""
    return functools.cache(lambda: (_date(old), _date(new)))


def filter_noise(result: CaseResult, model: NoiseModel) -> CaseResult:
    """Leave the differences at noisy locations out of a result (per the model's counts now)."""
    if not result.differences:
        return result
    dates = _dates_of(result.old, result.new)

    rules = result.case.compare
    threshold = rules.noise_threshold
    template = result.case.template
    kept: list[Difference] = []
    noisy: list[Difference] = []
    for diff in result.differences:
        if diff.kind == "body" and diff.location == "text":
            is_noise = _text_is_noise(result, model, rules, threshold)
        else:
            is_noise = not is_unlisted(diff) and model.decide(template, diff, threshold, dates)
        (noisy if is_noise else kept).append(diff)
    if not noisy:
        return result
    return set_aside(result, kept, noise=tuple(noisy))


def apply_noise(result: CaseResult, replica: Exchange, model: NoiseModel) -> CaseResult:
    """Observe the old-vs-old sample of this case, then filter its noise (no deferral)."""
    if isinstance(result.old, Response) and isinstance(replica, Response):
        model.observe(result.case.template, result.old, replica, result.case.compare)
    model.observe_new(result.case.template, result.differences)
    return filter_noise(replace(result, old_replica=replica), model)


def _lean(result: CaseResult) -> CaseResult:
    """Drop bodies a held result no longer needs (only text differences are re-read)."""
    if any(d.kind == "body" and d.location == "text" for d in result.differences):
        return result
    old, new = result.old, result.new
    if isinstance(old, Response) and old.body:
        old = replace(
            old, body=b"", body_size=old.body_size if old.body_size >= 0 else len(old.body)
        )
    if isinstance(new, Response) and new.body:
        new = replace(
            new, body=b"", body_size=new.body_size if new.body_size >= 0 else len(new.body)
        )
    return replace(result, old=old, new=new)


class NoiseLearner:
    """Observes every old-vs-old sample and releases results once noise can be decided.

    A template's results are held until it has ``min_samples`` old-vs-old samples (or the run
    ends), then judged with the counts at that point; later results are judged at once. So no
    case is judged on one or two samples, and memory stays bounded by templates x min_samples
    (held results keep bodies only when a text difference needs them).
    """

    def __init__(self, model: NoiseModel, min_samples: int = DEFAULT_MIN_SAMPLES) -> None:
        self.model = model
        self.min_samples = min_samples
        self.pending: dict[str, list[CaseResult]] = {}

    def add(self, result: CaseResult, replica: Exchange) -> list[CaseResult]:
        template = result.case.template
        if isinstance(result.old, Response):
            if isinstance(replica, Response):
                self.model.observe(template, result.old, replica, result.case.compare)
            self.model.observe_repeat(result.case.id, template, result.old, result.case.compare)
        self.model.observe_new(template, result.differences)
        result = replace(result, old_replica=replica)
        held = self.pending.get(template)
        if self.model.samples.get(template, 0) >= self.min_samples:
            ready = [filter_noise(r, self.model) for r in self.pending.pop(template, [])]
            ready.append(filter_noise(result, self.model))
            return ready
        if held is None:
            held = self.pending[template] = []
        held.append(_lean(result))
        return []

    def flush(self) -> list[CaseResult]:
        """Everything still held, judged with what was learned (end of run, or interrupt)."""
        ready = [filter_noise(r, self.model) for held in self.pending.values() for r in held]
        self.pending.clear()
        return ready


# --------------------------------------------------------------------------------------------
# Suggestions: learned noise as explicit compare rules
# --------------------------------------------------------------------------------------------

_HEX = re.compile(r"[0-9a-f]+|[0-9A-F]+")


def _token_class(examples: list[str]) -> str:
    """A regex for a noisy text token, from the values it took."""
    if examples and all(e.isdigit() for e in examples):
        return "[0-9]+"
    lengths = {len(e) for e in examples}
    if examples and len(lengths) == 1 and all(_HEX.fullmatch(e) for e in examples):
        return f"[0-9a-fA-F]{{{lengths.pop()}}}"
    return r"\w+"


def suggest_rules(entries: Iterable[NoiseEntry]) -> dict[str, dict[str, object]]:
    """Learned noise -> per suite, the ``compare:`` rules that make it explicit.

    Headers become ``ignore_headers``, JSON paths ``ignore_json_paths``, text regions a ``mask``
    anchored on the text just before the region. Status codes and whole-body text noise cannot be
    expressed as a rule; they are listed under ``unsuggestable``.
    """
    by_suite: dict[str, dict[str, object]] = {}
    for entry in entries:
        suite = entry.template.split("::", 1)[0]
        rules = by_suite.setdefault(suite, {})
        kind, location = entry.kind, entry.location
        if kind == "header":
            names = rules.setdefault("ignore_headers", [])
            assert isinstance(names, list)
            if location not in names:
                names.append(location)
        elif kind == "body" and location.startswith("$") and location != "$":
            paths = rules.setdefault("ignore_json_paths", [])
            assert isinstance(paths, list)
            if location not in paths:
                paths.append(location)
        elif kind == "body" and location.startswith("text~") and entry.context:
            context = entry.context
            pattern = re.escape(context) + _token_class(list(entry.examples))
            masks = rules.setdefault("mask", [])
            assert isinstance(masks, list)
            mask = {"pattern": pattern, "replace": context.replace("\\", "\\\\") + "<noise>"}
            if mask not in masks:
                masks.append(mask)
        else:
            left = rules.setdefault("unsuggestable", [])
            assert isinstance(left, list)
            left.append(f"{entry.template}: {kind} {location}")
    for rules in by_suite.values():
        for key in ("ignore_headers", "ignore_json_paths"):
            if isinstance(rules.get(key), list):
                rules[key] = sorted(rules[key])  # type: ignore[call-overload]
    return by_suite
