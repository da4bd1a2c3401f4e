"""YAML read the strict way: one document, no key given twice, no alias that multiplies itself; every problem with its line.

PyYAML keeps the last of two equal keys without a word and expands aliases without limit; a stack file
deserves better. Problems carry the path of the node inside the document, so the caller can name the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_NODES = 100_000
"""A stack file has a few hundred values; aliases (``*name``) that expand beyond this are refused, not walked."""
MERGE_TAG = "tag:yaml.org,2002:merge"
MAX_DIGITS = 100
"""No setting takes a number this long; longer ones are read as a LongNumber, which the schema then refuses by key
(Python refuses to turn more than 4,300 decimal digits into an int, and would raise while reading the file)."""


class LongNumber:
    """A number in the input too long for any setting (YAML or JSON), kept as its text for the message."""

    def __init__(self, text: str) -> None:
        self.text = text

    @property
    def digits(self) -> int:
        return sum(c.isdigit() for c in self.text)

    def __repr__(self) -> str:
        return f"a {self.digits:,}-digit number (too long for any setting)"


def number_or_long(text: str, read: Any) -> Any:
    """``read(text)``, unless the number is too long for any setting."""
    return LongNumber(text) if sum(c.isdigit() for c in text) > MAX_DIGITS else read(text)


class _Loader(yaml.SafeLoader):
    """SafeLoader whose numbers are checked for length before Python converts them."""


def _number(tag: str) -> Any:
    base = yaml.SafeLoader.yaml_constructors[tag]

    def construct(loader: yaml.SafeLoader, node: Node) -> Any:
        return number_or_long(str(node.value), lambda _: base(loader, node))

    return construct


for _tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float"):
    _Loader.add_constructor(_tag, _number(_tag))

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class YamlProblem:
    """Where (path in the document, 1-based line; 0 when not known) and what."""

    path: Path
    line: int
    message: str


class YamlError(Exception):
    """The text is not a usable YAML document."""

    def __init__(self, problems: list[YamlProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(p.message for p in problems))


def _syntax_problem(err: yaml.YAMLError, text: str) -> YamlProblem:
    if isinstance(err, yaml.reader.ReaderError):
        line = text.count("\n", 0, err.position) + 1
        return YamlProblem((), line, f"character {chr(err.character)!r} (#x{err.character:04x}) is not allowed in YAML; remove it")
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    what = " ".join(str(s) for s in (getattr(err, "context", None), getattr(err, "problem", None)) if s) or str(err).splitlines()[0]
    return YamlProblem((), mark.line + 1 if mark else 0, f"not valid YAML: {what}")


def _key(node: Node) -> str | None:
    return node.value if isinstance(node, ScalarNode) and node.tag != MERGE_TAG else None


def _children(node: Node, path: Path) -> list[tuple[Node, Path]]:
    if isinstance(node, MappingNode):
        out: list[tuple[Node, Path]] = []
        for k, v in node.value:
            key = _key(k)
            out.append((v, (*path, key) if key is not None else path))
        return out
    if isinstance(node, SequenceNode):
        return [(v, (*path, i)) for i, v in enumerate(node.value)]
    return []


def _check(root: Node) -> list[YamlProblem]:
    """Duplicate keys (each mapping once, however many aliases point at it), self-reference and the expanded size."""
    problems: list[YamlProblem] = []
    size: dict[int, int] = {}
    visiting: set[int] = set()
    # iterative depth-first walk: (node, path, children done?)
    stack: list[tuple[Node, Path, bool]] = [(root, (), False)]
    while stack:
        node, path, done = stack.pop()
        nid = id(node)
        if done:
            visiting.discard(nid)
            size[nid] = 1 + sum(size.get(id(c), 0) for c, _ in _children(node, path))
            if size[nid] > MAX_NODES:
                raise YamlError([YamlProblem(path, node.start_mark.line + 1, f"expands to more than {MAX_NODES:,} values through aliases (*name)")])
            continue
        if nid in size:
            continue
        if nid in visiting:
            raise YamlError([YamlProblem(path, node.start_mark.line + 1, "contains itself through an alias (*name); write the value out")])
        visiting.add(nid)
        stack.append((node, path, True))
        if isinstance(node, MappingNode):
            first: dict[tuple[str, str], int] = {}
            for k, _ in node.value:
                key = _key(k)
                if key is None:
                    continue
                line = k.start_mark.line + 1
                if (k.tag, key) in first:
                    problems.append(YamlProblem((*path, key), line, f"given twice (lines {first[(k.tag, key)]} and {line}); keep one"))
                else:
                    first[(k.tag, key)] = line
        stack += [(c, p, False) for c, p in reversed(_children(node, path))]
    return problems


def load(text: str) -> Any:
    """The one document in ``text`` (None when empty), or YamlError listing what is wrong."""
    try:
        loader = _Loader(text)  # reads (and checks) the first characters already
    except yaml.YAMLError as err:
        raise YamlError([_syntax_problem(err, text)]) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        problems = _check(node)
        if problems:
            raise YamlError(problems)
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        raise YamlError([_syntax_problem(err, text)]) from None
    except RecursionError:
        raise YamlError([YamlProblem((), 0, "is nested too deeply to read")]) from None
    finally:
        loader.dispose()
