"""Include/exclude filters on the files of a source, as ``aws s3 cp --recursive --include/--exclude`` knows them.

Pure logic, no I/O: a :class:`FileFilter` is compiled once from its rules and then decides for each
relative POSIX path (``outputs/2026/report.csv``, as :func:`collect_source` lists it) whether it is
published.

Rules
    An ordered list of ``include`` and ``exclude`` patterns. For each file, the **last rule that
    matches it decides**. A file that no rule matches is published, unless the first rule is an
    ``include``: then only what the includes admit is published (``--include '*.csv'`` alone means
    "only CSV files", as in s5cmd; ``aws s3 cp`` users write ``--exclude '*' --include '*.csv'``,
    which means the same here). The keyword form ``include=[...], exclude=[...]`` is the rule list
    "every include, then every exclude", so an exclude always wins over an include.

Patterns (matched case-sensitively against the path relative to the source root)
    ``*``
        any run of characters within one path segment (never ``/``); it also matches names that
        start with a dot.
    ``?``
        exactly one character other than ``/``.
    ``[abc]``, ``[a-z]``, ``[!a-z]`` or ``[^a-z]``
        one character from (or, negated, not from) the set; never ``/``. A ``]`` right after the
        opening ``[`` (or ``[!``) is literal. ``/`` cannot appear inside the brackets.
    ``**``
        only as a whole segment: ``**/x`` matches ``x`` at any depth (the root included),
        ``a/**/b`` matches ``a/b``, ``a/x/b``, ``a/x/y/b``..., ``a/**`` matches everything below
        ``a``, and ``**`` alone matches everything. ``a**`` or ``**.log`` is an error (write ``*``).
    ``\\``
        makes the next character literal (``\\*`` matches a ``*`` in a name).
    no ``/`` in the pattern (other than a trailing one)
        it matches a name at any depth: ``*.log`` matches ``app.log`` and ``logs/2026/app.log``
        (as in ``.gitignore`` and rsync; ``aws s3 cp``'s ``*`` crosses folders, so this keeps its
        ``--exclude '*.log'`` excluding every log).
    a ``/`` in the pattern
        it is anchored at the source root: ``logs/*.log`` matches ``logs/a.log`` but neither
        ``logs/2026/a.log`` nor ``x/logs/a.log``. A leading ``/`` only anchors (``/*.log`` matches the
        logs at the top level only).
    a trailing ``/``
        the pattern matches directories only: ``cache/`` matches every directory named ``cache``.
    directories
        a pattern that matches a directory matches every file below it: ``--exclude node_modules``
        excludes ``a/node_modules/x/y.js``. Each file is still decided by the last matching rule, so
        ``--exclude 'cache/' --include '*.txt'`` publishes ``cache/notes.txt``.

Directories in an archive
    An archive keeps the directories that lead to a published file. An empty directory of the
    source is kept when the rules publish it (matched as above, as a directory); a directory whose
    files were all excluded is not kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from airflow_s3_publisher.exceptions import InvalidSpecError

INCLUDE = "include"
EXCLUDE = "exclude"


@dataclass(frozen=True, slots=True)
class Rule:
    """One include or exclude pattern."""

    kind: str
    """``"include"`` or ``"exclude"``."""
    pattern: str
    """The glob, as the user wrote it."""

    def __post_init__(self) -> None:
        if self.kind not in (INCLUDE, EXCLUDE):
            raise InvalidSpecError(f"invalid filter rule kind {self.kind!r}: expected 'include' or 'exclude'")
        if not isinstance(self.pattern, str) or not self.pattern:
            raise InvalidSpecError(
                f"invalid {self.kind} pattern {self.pattern!r}: expected a non-empty glob such as '*.csv' or 'logs/**'"
            )


@dataclass(frozen=True, slots=True)
class _Compiled:
    include: bool
    on_file: re.Pattern[str]
    """Matches a file's path when the pattern matches the file or one of its directories."""
    on_dir: re.Pattern[str]
    """Matches a directory's path when the pattern matches it or one of the directories above it."""


class FileFilter:
    """Ordered include/exclude rules, compiled once (see the module documentation for the semantics).

    :param rules: the rules in the order they apply; the last one that matches a path decides.
    :raises InvalidSpecError: a pattern that is empty, has a ``.``, ``..`` or empty segment, an
        unclosed ``[``, a trailing ``\\`` or a ``**`` that is not a whole segment.
    """

    __slots__ = ("_compiled", "_default", "rules")

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self._compiled = tuple(_compile(rule) for rule in self.rules)
        # Nothing matched: published, unless the rules start with an include (then only includes admit).
        self._default = not (self.rules and self.rules[0].kind == INCLUDE)

    @classmethod
    def from_lists(
        cls, include: Sequence[str] | str | None = None, exclude: Sequence[str] | str | None = None
    ) -> FileFilter:
        """The keyword form: every ``include`` pattern, then every ``exclude`` pattern (excludes win).

        :param include: globs of the files to publish; when given, nothing else is published.
        :param exclude: globs of the files never to publish, even if an include matches them.
        """
        rules = [Rule(INCLUDE, p) for p in _patterns(include, "include")]
        rules += [Rule(EXCLUDE, p) for p in _patterns(exclude, "exclude")]
        return cls(rules)

    @property
    def active(self) -> bool:
        """Whether there is any rule (without one, every file is published)."""
        return bool(self.rules)

    def includes_file(self, relpath: str) -> bool:
        """Whether the file at ``relpath`` (relative POSIX path) is published."""
        for rule in reversed(self._compiled):
            if rule.on_file.match(relpath):
                return rule.include
        return self._default

    def includes_dir(self, relpath: str) -> bool:
        """Whether an empty directory at ``relpath`` is published (as an archive member)."""
        for rule in reversed(self._compiled):
            if rule.on_dir.match(relpath):
                return rule.include
        return self._default

    def prunes_dir(self, relpath: str) -> bool:
        """Whether nothing below the directory ``relpath`` can be published, so it need not be walked.

        True when the last rule matching the directory is an exclude and no include follows it: that
        exclude matches every path below, and only a later include could override it.
        """
        for index in range(len(self._compiled) - 1, -1, -1):
            rule = self._compiled[index]
            if rule.on_dir.match(relpath):
                return not rule.include and all(not later.include for later in self._compiled[index + 1 :])
        return False

    def describe(self) -> str:
        """The rules as command-line flags, e.g. ``--exclude '*' --include '*.csv'``."""
        return " ".join(f"--{rule.kind} {rule.pattern!r}" for rule in self.rules)

    def __repr__(self) -> str:
        return f"FileFilter({list(self.rules)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FileFilter) and other.rules == self.rules

    def __hash__(self) -> int:
        return hash(self.rules)


def _patterns(value: Sequence[str] | str | None, name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]  # one pattern, not its characters
    patterns = list(value)
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise InvalidSpecError(f"{name} must be a list of glob strings such as ['*.csv'], not {value!r}")
    return patterns


def _compile(rule: Rule) -> _Compiled:
    pattern = rule.pattern
    if "\x00" in pattern:
        raise InvalidSpecError(f"invalid {rule.kind} pattern {pattern!r}: it contains a NUL character")
    body = pattern
    dir_only = body.endswith("/")
    if dir_only:
        body = body[:-1]
    anchored = body.startswith("/")
    if anchored:
        body = body[1:]
    segments = body.split("/")
    for segment in segments:
        if segment in ("", ".", ".."):
            shown = "an empty" if segment == "" else f"a {segment!r}"
            raise InvalidSpecError(
                f"invalid {rule.kind} pattern {pattern!r}: it has {shown} segment; patterns are paths relative "
                "to the source, such as 'logs/*.txt' or '**/cache/'"
            )
        if "**" in segment and segment != "**":
            raise InvalidSpecError(
                f"invalid {rule.kind} pattern {pattern!r}: '**' must be a whole path segment ('**/x', 'a/**/b', "
                "'a/**'); within a name use '*'"
            )
    if not anchored and len(segments) == 1 and segments[0] != "**":
        segments = ["**", *segments]  # no '/': a name at any depth
    core = _translate(segments, rule, pattern)
    try:
        anywhere_below = re.compile(rf"(?:{core})(?:/.*)?\Z", re.DOTALL)
        below = re.compile(rf"(?:{core})/.*\Z", re.DOTALL) if dir_only else anywhere_below
    except re.error as err:  # e.g. a reversed range [z-a]
        raise InvalidSpecError(f"invalid {rule.kind} pattern {pattern!r}: {err}") from None
    return _Compiled(include=rule.kind == INCLUDE, on_file=below, on_dir=anywhere_below)


def _translate(segments: list[str], rule: Rule, pattern: str) -> str:
    # Collapse runs of '**' (they mean the same as one).
    collapsed: list[str] = []
    for segment in segments:
        if not (segment == "**" and collapsed and collapsed[-1] == "**"):
            collapsed.append(segment)
    parts: list[str] = []
    last = len(collapsed) - 1
    for index, segment in enumerate(collapsed):
        if segment == "**":
            parts.append(".+" if index == last else "(?:.+/)?")
            continue
        parts.append(_translate_segment(segment, rule, pattern))
        if index != last:
            parts.append("/")
    return "".join(parts)


def _translate_segment(segment: str, rule: Rule, pattern: str) -> str:
    out: list[str] = []
    i = 0
    n = len(segment)
    while i < n:
        char = segment[i]
        if char == "\\":
            if i + 1 >= n:
                raise InvalidSpecError(
                    f"invalid {rule.kind} pattern {pattern!r}: it ends with a lone '\\'; write '\\\\' for a backslash"
                )
            out.append(re.escape(segment[i + 1]))
            i += 2
        elif char == "*":
            out.append("[^/]*")
            i += 1
        elif char == "?":
            out.append("[^/]")
            i += 1
        elif char == "[":
            regex, i = _translate_class(segment, i, rule, pattern)
            out.append(regex)
        else:
            out.append(re.escape(char))
            i += 1
    return "".join(out)


def _translate_class(segment: str, start: int, rule: Rule, pattern: str) -> tuple[str, int]:
    """``[...]`` starting at ``segment[start]``: its regex and the index after the closing ``]``."""
    i = start + 1
    negate = i < len(segment) and segment[i] in "!^"
    if negate:
        i += 1
    members: list[str] = []
    first = True
    while True:
        if i >= len(segment):
            raise InvalidSpecError(
                f"invalid {rule.kind} pattern {pattern!r}: '[' at position {start} is never closed "
                "(and '/' cannot appear inside brackets); write '\\[' or '[[]' for a literal '['"
            )
        char = segment[i]
        if char == "]" and not first:
            break
        if char == "\\" and i + 1 < len(segment):
            members.append(re.escape(segment[i + 1]))
            i += 2
        elif char == "-" and members and i + 1 < len(segment) and segment[i + 1] != "]":
            members.append("-")  # a range between the previous and the next character
            i += 1
        else:
            members.append(r"\-" if char == "-" else re.escape(char))
            i += 1
        first = False
    body = "".join(members)
    return (f"[^/{body}]" if negate else f"[{body}]"), i + 1
