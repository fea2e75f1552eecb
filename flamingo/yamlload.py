"""Safe YAML loading that remembers where every key and value came from.

This module owns turning the bytes of a suite or targets file into plain Python data whose
mappings and sequences carry 1-based line numbers, so that every later validation error can be
reported as ``FILE:LINE: message``. It owns nothing about what the data *means*.

Theory of operation:

- ``FlamingoLoader`` is a ``yaml.SafeLoader`` subclass: no object construction, ever.
- Mappings become ``YMap`` (a ``dict``) with ``line`` (where the mapping starts), ``lines``
  (key -> line of the key) and ``value_lines`` (key -> line of the value). Sequences become
  ``YList`` (a ``list``) with ``line`` and ``item_lines``. Scalars stay plain ``str``/``int``/...;
  their line is found through their parent.
- Implicit scalar types follow the YAML 1.2 core schema rather than PyYAML's YAML 1.1 default:
  only ``true``/``false`` are booleans (``yes``, ``no``, ``on`` stay strings, so ``country: no``
  and ``verify_tls: yes`` do not silently change meaning), ``010`` is ten, and dates stay strings
  (they would not survive ``json.dumps``). Tags that build non-JSON values (``!!binary``,
  ``!!set``, ``!!timestamp``, ...) are refused.
- Duplicate keys in one mapping are an error (PyYAML would silently keep the last one).
- Aliases are bounded while the document is composed, before anything is constructed: the
  nodes they add (an alias counts the whole expanded subtree it points at) may not exceed
  `MAX_ALIAS_NODES` per document, and an alias to a node that contains it is refused. A
  "billion laughs" file (nine levels of ``&a [*a, *a, ...]``) is one small graph to PyYAML but
  ~10^9 values to every walk that follows (substitution, templates, JSON bodies); it is an input
  error at the line of the alias that crosses the bound, in milliseconds.
- Every failure, from undecodable bytes to a scanner error, becomes an ``InputError`` with the
  file and the line of the problem; no yaml exception escapes.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.events import AliasEvent
from yaml.nodes import CollectionNode, MappingNode, Node, ScalarNode, SequenceNode

from flamingo.errors import InputError

__all__ = [
    "FlamingoLoader",
    "YList",
    "YMap",
    "load_document",
    "load_documents",
    "parse_documents",
    "read_text",
]


class YMap(dict[Any, Any]):
    """A YAML mapping that knows the line of the mapping, of each key and of each value."""

    __slots__ = ("line", "lines", "value_lines")

    def __init__(self, line: int = 1) -> None:
        super().__init__()
        self.line = line
        self.lines: dict[Any, int] = {}
        self.value_lines: dict[Any, int] = {}

    def key_line(self, key: Any) -> int:
        return self.lines.get(key, self.line)

    def value_line(self, key: Any) -> int:
        return self.value_lines.get(key, self.key_line(key))


class YList(list[Any]):
    """A YAML sequence that knows its own line and the line of each item."""

    __slots__ = ("item_lines", "line")

    def __init__(self, line: int = 1) -> None:
        super().__init__()
        self.line = line
        self.item_lines: list[int] = []

    def item_line(self, index: int) -> int:
        if 0 <= index < len(self.item_lines):
            return self.item_lines[index]
        return self.line


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


# --------------------------------------------------------------------------------------------
# The loader: YAML 1.2 core scalars, line-aware containers
# --------------------------------------------------------------------------------------------

_MERGE_TAG = "tag:yaml.org,2002:merge"

# (tag, pattern, first characters) in priority order: int must win over float for "123".
_CORE_RESOLVERS: tuple[tuple[str, str, str], ...] = (
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    (
        "tag:yaml.org,2002:float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+0123456789.",
    ),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", "~nN"),
    (_MERGE_TAG, r"^(?:<<)$", "<"),
)

_REFUSED_TAGS = (
    "tag:yaml.org,2002:binary",
    "tag:yaml.org,2002:set",
    "tag:yaml.org,2002:omap",
    "tag:yaml.org,2002:pairs",
    "tag:yaml.org,2002:timestamp",
)


#: Nodes that aliases may add to one YAML document (each alias adds the expanded size of the
#: node it points at). Sharing a block of headers across a few hundred requests stays far below;
#: an alias bomb crosses it within its first levels.
MAX_ALIAS_NODES = 100_000


class FlamingoLoader(yaml.SafeLoader):
    """``SafeLoader`` with YAML 1.2 core scalars and line-aware ``YMap``/``YList`` containers,
    and aliases bounded at composition (`MAX_ALIAS_NODES`)."""

    file: str = "<string>"

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._sizes: dict[int, int] = {}  # id(node) -> nodes in its expanded subtree
        self._open: set[str] = set()  # anchors whose node is still being composed
        self._alias_nodes = 0

    def compose_document(self) -> Node | None:
        self._sizes, self._open, self._alias_nodes = {}, set(), 0
        node: Node | None = super().compose_document()
        self._sizes = {}
        return node

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, AliasEvent):
            line = int(event.start_mark.line) + 1 if event.start_mark is not None else 1
            if event.anchor in self._open:
                message = f"YAML alias '*{event.anchor}' refers to a node that contains it"
                raise InputError(message, self.file, line)
            target = self.anchors.get(event.anchor)
            if target is not None:  # else PyYAML's own "undefined alias" error follows
                self._alias_nodes += self._expanded_size(target)
                if self._alias_nodes > MAX_ALIAS_NODES:
                    raise InputError(
                        f"YAML aliases expand to more than {MAX_ALIAS_NODES:,} nodes "
                        f"(at alias '*{event.anchor}'); write the data out or share less",
                        self.file,
                        line,
                    )
            node: Node | None = super().compose_node(parent, index)
            return node
        anchor = getattr(event, "anchor", None)
        if anchor is None:
            node = super().compose_node(parent, index)
            return node
        self._open.add(anchor)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._open.discard(anchor)
        return node

    def _expanded_size(self, root: Node) -> int:
        """Nodes in ``root``'s subtree with every alias expanded (memoized per node: an anchored
        subtree is complete by the time an alias can point at it, so sizes never change)."""
        sizes = self._sizes
        stack: list[tuple[Node, bool]] = [(root, False)]
        while stack:
            node, children_done = stack.pop()
            if id(node) in sizes:
                continue
            children = _children(node)
            if children_done or not children:
                sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
                continue
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
        return sizes[id(root)]


def _children(node: Node) -> list[Node]:
    if not isinstance(node, CollectionNode):
        return []
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return list(node.value)


# A fresh table (not a copy of SafeLoader's): only the core-schema resolvers below apply.
FlamingoLoader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in _CORE_RESOLVERS:
    FlamingoLoader.add_implicit_resolver(_tag, re.compile(_pattern), [*_first])
# The empty plain scalar ("key:" with nothing after it) is null too.
FlamingoLoader.yaml_implicit_resolvers.setdefault("", []).append(
    ("tag:yaml.org,2002:null", re.compile(r"^$"))
)


def _scalar_text(loader: FlamingoLoader, node: Node) -> str:
    if not isinstance(node, ScalarNode):
        raise ConstructorError(None, None, f"expected a scalar for {node.tag}", node.start_mark)
    return str(loader.construct_scalar(node))


def _construct_bool(loader: FlamingoLoader, node: Node) -> bool:
    text = _scalar_text(loader, node).lower()
    if text not in ("true", "false"):
        raise ConstructorError(None, None, f"invalid boolean {text!r}", node.start_mark)
    return text == "true"


def _construct_int(loader: FlamingoLoader, node: Node) -> int:
    text = _scalar_text(loader, node)
    try:
        if text.startswith(("0o", "0x", "-0o", "-0x", "+0o", "+0x")):
            return int(text, 0)
        return int(text)
    except ValueError as exc:
        raise ConstructorError(None, None, f"invalid integer {text!r}", node.start_mark) from exc


def _construct_float(loader: FlamingoLoader, node: Node) -> float:
    text = _scalar_text(loader, node)
    lower = text.lower().replace("_", "")
    if lower.endswith(".inf"):
        return -math.inf if lower.startswith("-") else math.inf
    if lower == ".nan":
        return math.nan
    try:
        return float(lower)
    except ValueError as exc:
        raise ConstructorError(None, None, f"invalid number {text!r}", node.start_mark) from exc


_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def _construct_str(loader: FlamingoLoader, node: Node) -> str:
    text = _scalar_text(loader, node)
    if _SURROGATE_RE.search(text):
        # PyYAML decodes "\ud83d\ude00" as two lone surrogates; join the pairs, refuse the rest
        # (a lone surrogate cannot be encoded as UTF-8 and would crash the sender later).
        try:
            text = text.encode("utf-16", "surrogatepass").decode("utf-16")
        except UnicodeDecodeError as exc:
            raise ConstructorError(
                None, None, "invalid \\u escape: unpaired UTF-16 surrogate", node.start_mark
            ) from exc
    return text


def _construct_null(loader: FlamingoLoader, node: Node) -> None:
    return None


def _short_tag(tag: str) -> str:
    return (
        "!!" + tag.removeprefix("tag:yaml.org,2002:")
        if tag.startswith("tag:yaml.org,2002:")
        else tag
    )


def _construct_refused(loader: FlamingoLoader, node: Node) -> Any:
    raise ConstructorError(
        None, None, f"unsupported YAML tag '{_short_tag(node.tag)}'", node.start_mark
    )


def _construct_map(loader: FlamingoLoader, node: Node) -> YMap:
    if not isinstance(node, MappingNode):
        raise ConstructorError(None, None, "expected a mapping", node.start_mark)
    data = YMap(_line(node))
    # Duplicates are judged on the keys as written, before "<<" merges bring in keys that the
    # mapping is allowed to override.
    written: dict[tuple[str, str], int] = {}
    for key_node, _ in node.value:
        if isinstance(key_node, ScalarNode) and key_node.tag != _MERGE_TAG:
            ident = (key_node.tag, key_node.value)
            if ident in written:
                raise InputError(
                    f"duplicate key '{key_node.value}' (first defined at line {written[ident]})",
                    loader.file,
                    _line(key_node),
                )
            written[ident] = _line(key_node)
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError as exc:
            raise ConstructorError(
                None, None, "a mapping key must be a scalar", key_node.start_mark
            ) from exc
        data[key] = loader.construct_object(value_node, deep=True)
        data.lines[key] = _line(key_node)
        data.value_lines[key] = _line(value_node)
    return data


def _construct_seq(loader: FlamingoLoader, node: Node) -> YList:
    if not isinstance(node, SequenceNode):
        raise ConstructorError(None, None, "expected a sequence", node.start_mark)
    data = YList(_line(node))
    for item in node.value:
        data.append(loader.construct_object(item, deep=True))
        data.item_lines.append(_line(item))
    return data


FlamingoLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
FlamingoLoader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)
FlamingoLoader.add_constructor("tag:yaml.org,2002:bool", _construct_bool)
FlamingoLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
FlamingoLoader.add_constructor("tag:yaml.org,2002:float", _construct_float)
FlamingoLoader.add_constructor("tag:yaml.org,2002:null", _construct_null)
FlamingoLoader.add_constructor("tag:yaml.org,2002:str", _construct_str)
for _refused in _REFUSED_TAGS:
    FlamingoLoader.add_constructor(_refused, _construct_refused)
FlamingoLoader.add_constructor(None, _construct_refused)  # any other tag: !!python/..., !custom


# --------------------------------------------------------------------------------------------
# Reading and parsing, with every failure translated to InputError
# --------------------------------------------------------------------------------------------


def read_text(path: str | os.PathLike[str]) -> str:
    """Read a file as UTF-8 text; missing, unreadable, binary or undecodable -> InputError."""
    file = os.fspath(path)
    try:
        with open(file, "rb") as handle:
            data = handle.read()
    except FileNotFoundError as exc:
        raise InputError("no such file", file) from exc
    except IsADirectoryError as exc:
        raise InputError("is a directory, expected a YAML file", file) from exc
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}", file) from exc
    nul = data.find(b"\x00")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise InputError("binary data (NUL byte), expected YAML text", file, line)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(
            f"not valid UTF-8 text (byte 0x{data[exc.start]:02x})",
            file,
            line,
        ) from exc


def _yaml_error(exc: yaml.YAMLError, text: str, file: str) -> InputError:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = int(mark.line) + 1 if mark is not None else 1
        problem = exc.problem or exc.context or "invalid YAML"
        if "'\\t'" in problem:
            return InputError(
                "tab character is not allowed here; indent YAML with spaces", file, line
            )
        message = f"invalid YAML: {problem}"
        if exc.context and exc.problem and exc.context_mark is not None:
            context = exc.context
            if exc.context_mark is not exc.problem_mark:
                context += f" at line {exc.context_mark.line + 1}"
            message += f" ({context})"
        return InputError(message, file, line)
    if isinstance(exc, yaml.reader.ReaderError):
        position = int(exc.position)
        line = text.count("\n", 0, position) + 1
        return InputError(
            f"control character U+{int(exc.character):04X} is not allowed in YAML", file, line
        )
    return InputError(f"invalid YAML: {exc}", file, 1)


def parse_documents(text: str, file: str) -> list[YMap]:
    """Parse every document of ``text``; each must be a mapping. Null documents are skipped."""
    try:
        loader = FlamingoLoader(text)  # the reader checks for control characters right here
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, text, file) from exc
    loader.file = file
    documents: list[YMap] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            data = loader.construct_document(node)
            if data is None:
                continue
            if not isinstance(data, YMap):
                raise InputError(
                    f"expected a mapping at the top level, got {describe(data)}", file, _line(node)
                )
            documents.append(data)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, text, file) from exc
    except RecursionError as exc:
        raise InputError("YAML is nested too deeply", file, 1) from exc
    finally:
        loader.dispose()
    if not documents:
        raise InputError("file is empty, expected a YAML mapping", file, 1)
    return documents


def load_documents(path: str | os.PathLike[str]) -> list[YMap]:
    """Read and parse a (possibly multi-document) YAML file."""
    file = os.fspath(path)
    return parse_documents(read_text(file), file)


def load_document(path: str | os.PathLike[str]) -> YMap:
    """Read and parse a YAML file that must hold exactly one mapping."""
    file = os.fspath(path)
    return parse_document(read_text(file), file)


def parse_document(text: str, file: str) -> YMap:
    documents = parse_documents(text, file)
    if len(documents) > 1:
        raise InputError("expected a single YAML document, found several", file, documents[1].line)
    return documents[0]


def describe(value: Any) -> str:
    """How a found value is named in messages: ``string 'yes'``, ``integer 5``, ``a list``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value}"
    if isinstance(value, str):
        return f"string {quote(value)}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def quote(text: str, limit: int = 60) -> str:
    """Single-quote a string for a message, escaping line breaks and shortening long ones."""
    shown = text.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    if len(shown) > limit:
        shown = shown[: limit - 3] + "..."
    return f"'{shown}'"
