"""Case selection: ``-k EXPR``, ``--tag TAG`` and ``--shard K/N``.

This module owns which expanded cases a run keeps. Every filter is a pure function of one case,
never of the other cases or their order, so ``--shard 1/3 .. 3/3`` on three machines (or three
pytest-xdist workers) partition the cases exactly, however each of them was expanded. A shard is
chosen by a hash of the case id - or of the request template for cases that learn noise, which
must stay together (`shard_key`).

``-k`` follows pytest's keyword expressions: identifiers match as case-insensitive substrings of
the case id, combined with ``and``, ``or``, ``not`` and parentheses (``not`` binds tightest, then
``and``, then ``or``). As an extension, an identifier may be quoted (``'get /a b'``) to include
spaces or parentheses. The parser is a few lines of recursive descent: pytest's own is internal.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from flamingo.errors import InputError
from flamingo.model import Case

__all__ = [
    "compile_keyword",
    "parse_shard",
    "resolve_shard",
    "select",
    "shard_index",
    "shard_key",
]

Matcher = Callable[[str], bool]  # takes the lower-cased case id


# --------------------------------------------------------------------------------------------
# --shard K/N
# --------------------------------------------------------------------------------------------

_SHARD_RE = re.compile(r"\s*([0-9]+)\s*/\s*([0-9]+)\s*")


def parse_shard(text: str, what: str = "--shard") -> tuple[int, int]:
    """``"2/5"`` -> ``(2, 5)``; anything but ``K/N`` with ``1 <= K <= N`` is an InputError."""
    match = _SHARD_RE.fullmatch(text)
    if match is not None:
        k, n = int(match.group(1)), int(match.group(2))
        if 1 <= k <= n:
            return k, n
    raise InputError(f"{what}: expected K/N with 1 <= K <= N, got '{text}'")


#: The environment variables a shard can come from (see `resolve_shard`).
SHARD_ENV = "FLAMINGO_SHARD"
INDEX_ENV = "JOB_COMPLETION_INDEX"  # set by Kubernetes in each pod of an Indexed Job


def resolve_shard(option: str | None, shards: int | None, env: Mapping[str, str]) -> str | None:
    """The shard a run takes, as ``"K/N"`` (None: every case), from, in this order:

    * ``--shard K/N``;
    * ``--shards N`` with Kubernetes' ``JOB_COMPLETION_INDEX`` (0-based: index ``i`` is shard
      ``i+1/N``, so ``JOB_COMPLETION_INDEX=1 --shards 3`` is ``--shard 2/3``);
    * ``FLAMINGO_SHARD=K/N`` in the environment.

    Given both options, or ``--shards`` without an index in range, is an InputError.
    """
    if option is not None and shards is not None:
        raise InputError("--shard and --shards: give one of them")
    if option is not None:
        k, n = parse_shard(option)
        return f"{k}/{n}"
    if shards is not None:
        if shards < 1:
            raise InputError(f"--shards: expected an integer >= 1, got {shards}")
        index = env.get(INDEX_ENV, "").strip()
        if not index:
            raise InputError(
                f"--shards {shards}: {INDEX_ENV} is not set (it is set in each pod of a "
                f"Kubernetes Indexed Job); elsewhere use --shard K/{shards}"
            )
        if not index.isdigit() or int(index) >= shards:
            raise InputError(
                f"--shards {shards}: {INDEX_ENV}={index!r} is not an index from 0 to {shards - 1}"
            )
        return f"{int(index) + 1}/{shards}"
    text = env.get(SHARD_ENV, "").strip()
    if text:
        k, n = parse_shard(text, SHARD_ENV)
        return f"{k}/{n}"
    return None


def shard_index(case_id: str, n: int) -> int:
    """The 1-based shard of ``n`` that a case id belongs to: stable across runs and machines."""
    digest = hashlib.blake2b(case_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % n + 1


def shard_key(case: Case) -> str:
    """What decides a case's shard: its id, or - when its template learns noise - the template,
    so every old-vs-old sample of a template is seen by one shard and decides its noise exactly
    as an unsharded run would (`flamingo.merge`). The price: one template's cases are not spread.
    """
    return case.template if case.compare.noise else case.id


# --------------------------------------------------------------------------------------------
# -k EXPR
# --------------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(
    r"\s*(?:(?P<paren>[()])|(?P<quoted>'[^']*'|\"[^\"]*\")|(?P<word>[^\s()'\"]+))"
)
_KEYWORDS = ("and", "or", "not")


@dataclass(frozen=True)
class _Token:
    kind: str  # "(", ")", "and", "or", "not", "ident", "end"
    text: str
    column: int  # 1-based


def _tokenize(expr: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while True:
        while position < len(expr) and expr[position].isspace():
            position += 1
        if position >= len(expr):
            tokens.append(_Token("end", "", position + 1))
            return tokens
        match = _TOKEN_RE.match(expr, position)
        if match is None:  # only an unpaired quote gets here
            raise InputError(f"-k: unterminated quote at column {position + 1} in {expr!r}")
        column = match.start(match.lastgroup or 0) + 1
        if match.group("paren"):
            tokens.append(_Token(match.group("paren"), match.group("paren"), column))
        elif match.group("quoted"):
            tokens.append(_Token("ident", match.group("quoted")[1:-1], column))
        else:
            word = match.group("word")
            tokens.append(_Token(word if word in _KEYWORDS else "ident", word, column))
        position = match.end()


class _Parser:
    """Grammar::

    expr := and ('or' and)*
    and  := not ('and' not)*
    not  := 'not' not | '(' expr ')' | ident
    """

    def __init__(self, expr: str) -> None:
        self.expr = expr
        self.tokens = _tokenize(expr)
        self.position = 0

    def peek(self) -> _Token:
        return self.tokens[self.position]

    def take(self) -> _Token:
        token = self.tokens[self.position]
        self.position += 1
        return token

    def fail(self, expected: str, token: _Token) -> InputError:
        found = "end of expression" if token.kind == "end" else repr(token.text)
        return InputError(
            f"-k: expected {expected} at column {token.column}, got {found} in {self.expr!r}"
        )

    def parse(self) -> Matcher:
        matcher = self.parse_or()
        if self.peek().kind != "end":
            raise self.fail("'and', 'or' or end of expression", self.peek())
        return matcher

    def parse_or(self) -> Matcher:
        options = [self.parse_and()]
        while self.peek().kind == "or":
            self.take()
            options.append(self.parse_and())
        if len(options) == 1:
            return options[0]
        return lambda text: any(option(text) for option in options)

    def parse_and(self) -> Matcher:
        parts = [self.parse_not()]
        while self.peek().kind == "and":
            self.take()
            parts.append(self.parse_not())
        if len(parts) == 1:
            return parts[0]
        return lambda text: all(part(text) for part in parts)

    def parse_not(self) -> Matcher:
        token = self.take()
        if token.kind == "not":
            inner = self.parse_not()
            return lambda text: not inner(text)
        if token.kind == "(":
            inner = self.parse_or()
            closing = self.take()
            if closing.kind != ")":
                raise self.fail("')'", closing)
            return inner
        if token.kind == "ident":
            needle = token.text.lower()
            return lambda text: needle in text
        raise self.fail("an identifier, 'not' or '('", token)


def compile_keyword(expr: str) -> Callable[[str], bool]:
    """Compile a ``-k`` expression into a predicate over case ids; an empty one keeps all."""
    if not expr.strip():
        return lambda _case_id: True
    matcher = _Parser(expr).parse()
    return lambda case_id: matcher(case_id.lower())


# --------------------------------------------------------------------------------------------
# select
# --------------------------------------------------------------------------------------------


def select(
    cases: Iterable[Case],
    keyword: str | None = None,
    tags: Sequence[str] = (),
    shard: tuple[int, int] | None = None,
) -> Iterator[Case]:
    """Lazily keep the cases that pass every given filter.

    ``tags``: a case is kept if it has ANY of them. The filters are checked (and a bad ``-k``
    reported) when ``select`` is called, not when the first case is pulled.
    """
    matches = compile_keyword(keyword) if keyword else None
    wanted = frozenset(tags)
    if shard is not None:
        k, n = shard
        if not 1 <= k <= n:
            raise InputError(f"--shard: expected K/N with 1 <= K <= N, got '{k}/{n}'")

    def keep(case: Case) -> bool:
        if wanted and wanted.isdisjoint(case.tags):
            return False
        if matches is not None and not matches(case.id):
            return False
        return shard is None or shard_index(shard_key(case), shard[1]) == shard[0]

    return (case for case in cases if keep(case))
