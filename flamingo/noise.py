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
    body     text~N (token N)              text bodies with the same number of tokens:
                                           each token position that differs is a region
    body     text                          text bodies whose token counts differ (whole body)

Everything here is pure: the model is an accumulator of the observations it is given, and the
decisions depend only on those counts. The rows `entries()` returns feed gate.json and
``flamingo noise --suggest``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from flamingo.compare import compare
from flamingo.judge import set_aside
from flamingo.model import CaseResult, CompareRules, Difference, Exchange, Response
from flamingo.normalize import header_value, normalize_body
from flamingo.signature import generalize

DEFAULT_THRESHOLD = 0.05
#: Old-vs-old samples a template needs before its cases are judged (the run's end releases all).
DEFAULT_MIN_SAMPLES = 10
#: Example values kept per noisy location (for suggestions).
MAX_EXAMPLES = 5
#: Text tokens: words, and every other character on its own.
_TOKEN = re.compile(r"\w+|\W", re.UNICODE)
#: Tokens of context kept before a noisy text region (to anchor a suggested mask).
CONTEXT_TOKENS = 3

NoiseKey = tuple[str, str]  # (kind, generalized location)


@dataclass
class NoiseStat:
    differing: int = 0
    examples: list[str] = field(default_factory=list)
    context: str = ""  # text regions: the tokens just before the region


@dataclass(frozen=True)
class NoiseEntry:
    template: str
    kind: str
    location: str
    differing: int
    samples: int
    examples: tuple[str, ...]
    context: str

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


def text_regions(a: str, b: str) -> list[int] | None:
    """Token positions where two texts differ; None when their token counts differ."""
    ta, tb = _tokens(a), _tokens(b)
    if len(ta) != len(tb):
        return None
    return [i for i, (x, y) in enumerate(zip(ta, tb, strict=True)) if x != y]


class NoiseModel:
    """Per-template counts of old-vs-old differences (a pure accumulator)."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD) -> None:
        self.default_threshold = threshold
        self.samples: dict[str, int] = {}
        self.stats: dict[str, dict[NoiseKey, NoiseStat]] = {}

    def observe(self, template: str, old: Response, replica: Response, rules: CompareRules) -> None:
        """Record one old-vs-old sample of ``template``."""
        self.samples[template] = self.samples.get(template, 0) + 1
        stats = self.stats.setdefault(template, {})
        seen: set[NoiseKey] = set()  # a sample counts once per location ($.items[*].t)
        for diff in compare(old, replica, rules):
            if diff.kind == "body" and diff.location == "text":
                self._observe_text(stats, old, replica, rules, diff)
                continue
            key = noise_key(diff)
            stat = stats.setdefault(key, NoiseStat())
            if key not in seen:
                seen.add(key)
                stat.differing += 1
            if len(stat.examples) < MAX_EXAMPLES and diff.old is not None:
                stat.examples.append(str(diff.old))

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
        if regions is None or a is None:
            stats.setdefault(("body", "text"), NoiseStat()).differing += 1
            return
        tokens = _tokens(a)
        for index in regions:
            stat = stats.setdefault(("body", f"text~{index}"), NoiseStat())
            stat.differing += 1
            if not stat.context:
                stat.context = "".join(tokens[max(0, index - CONTEXT_TOKENS) : index])
            if len(stat.examples) < MAX_EXAMPLES:
                stat.examples.append(tokens[index])

    def is_noise(self, template: str, key: NoiseKey, threshold: float | None = None) -> bool:
        samples = self.samples.get(template, 0)
        stat = self.stats.get(template, {}).get(key)
        if not samples or stat is None:
            return False
        limit = self.default_threshold if threshold is None else threshold
        return stat.differing >= limit * samples

    def entries(self, threshold: float | None = None) -> list[NoiseEntry]:
        """Every location that is noise now, most frequent first (stable order)."""
        rows: list[NoiseEntry] = []
        for template, stats in self.stats.items():
            samples = self.samples[template]
            for (kind, location), stat in stats.items():
                if self.is_noise(template, (kind, location), threshold):
                    rows.append(
                        NoiseEntry(
                            template,
                            kind,
                            location,
                            stat.differing,
                            samples,
                            tuple(stat.examples),
                            stat.context,
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
                    template, kind, location, s.differing, tuple(s.examples), s.context
                )
                for template, stats in self.stats.items()
                for (kind, location), s in stats.items()
            ),
        )

    def absorb(self, state: NoiseState) -> None:
        """Add another model's observations: the counts add up, so what is noise is decided as
        if one model had seen every sample (examples: the first `MAX_EXAMPLES` in order)."""
        for template, samples in state.samples:
            self.samples[template] = self.samples.get(template, 0) + samples
        for row in state.stats:
            stats = self.stats.setdefault(row.template, {})
            stat = stats.setdefault((row.kind, row.location), NoiseStat())
            stat.differing += row.differing
            stat.examples.extend(row.examples[: MAX_EXAMPLES - len(stat.examples)])
            stat.context = stat.context or row.context


@dataclass(frozen=True)
class NoiseObservation:
    """How often one location of one template differed between two old responses."""

    template: str
    kind: str
    location: str
    differing: int
    examples: tuple[str, ...] = ()
    context: str = ""


@dataclass(frozen=True)
class NoiseState:
    """A `NoiseModel`'s counts as plain data: samples per template and every observation."""

    samples: tuple[tuple[str, int], ...] = ()
    stats: tuple[NoiseObservation, ...] = ()


def _text_is_noise(
    result: CaseResult, model: NoiseModel, rules: CompareRules, threshold: float | None
) -> bool:
    old, new = result.old, result.new
    assert isinstance(old, Response) and isinstance(new, Response)
    template = result.case.template
    a, b = _text(old, rules), _text(new, rules)
    regions = text_regions(a, b) if a is not None and b is not None else None
    if regions is None:
        return model.is_noise(template, ("body", "text"), threshold)
    return all(model.is_noise(template, ("body", f"text~{i}"), threshold) for i in regions)


def filter_noise(result: CaseResult, model: NoiseModel) -> CaseResult:
    """Leave the differences at noisy locations out of a result (per the model's counts now)."""
    if not result.differences:
        return result
    rules = result.case.compare
    threshold = rules.noise_threshold
    template = result.case.template
    kept: list[Difference] = []
    noisy: list[Difference] = []
    for diff in result.differences:
        if diff.kind == "body" and diff.location == "text":
            is_noise = _text_is_noise(result, model, rules, threshold)
        else:
            is_noise = model.is_noise(template, noise_key(diff), threshold)
        (noisy if is_noise else kept).append(diff)
    if not noisy:
        return result
    return set_aside(result, kept, noise=tuple(noisy))


def apply_noise(result: CaseResult, replica: Exchange, model: NoiseModel) -> CaseResult:
    """Observe the old-vs-old sample of this case, then filter its noise (no deferral)."""
    if isinstance(result.old, Response) and isinstance(replica, Response):
        model.observe(result.case.template, result.old, replica, result.case.compare)
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
        if isinstance(result.old, Response) and isinstance(replica, Response):
            self.model.observe(template, result.old, replica, result.case.compare)
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
