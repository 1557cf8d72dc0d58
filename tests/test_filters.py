"""Include/exclude filters: the matcher (pure, against an independent fnmatch-based oracle), then
``collect_source`` and ``publish()`` with filters against SeaweedFS."""

from __future__ import annotations

import fnmatch
import io
import os
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_s3_publisher.exceptions import InvalidSpecError, SourceError
from airflow_s3_publisher.filters import EXCLUDE, INCLUDE, FileFilter, Rule
from airflow_s3_publisher.manifest import MANIFEST_NAME, parse_manifest
from tests.support import archive_members, objects_below, read_tree, sha256_b64, use_connection
from tools.seaweed import ADMIN, SeaweedServer

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mypy_boto3_s3 import S3Client


# ======================================================================================================
# An oracle written from the documented rules, on top of fnmatch (one segment at a time)
# ======================================================================================================


def _segments_match(pattern: Sequence[str], path: Sequence[str]) -> bool:
    """Whether the pattern's segments match the path's segments exactly (``**``: zero or more segments,
    one or more when it is the pattern's last segment)."""
    if not pattern:
        return not path
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        if not rest:
            return len(path) >= 1
        return any(_segments_match(rest, path[i:]) for i in range(len(path) + 1))
    return bool(path) and fnmatch.fnmatchcase(path[0], head) and _segments_match(rest, path[1:])


def oracle_matches(pattern: str, path: str, *, is_dir: bool) -> bool:
    """Whether ``pattern`` matches the file (or directory) at ``path`` or one of the directories above it."""
    dir_only = pattern.endswith("/")
    body = pattern.rstrip("/")
    anchored = body.startswith("/")
    segments = body.lstrip("/").split("/")
    if not anchored and len(segments) == 1:
        segments = ["**", *segments]
    parts = path.split("/")
    # Prefixes that are directories: every proper prefix, and the path itself when it is a directory.
    for length in range(1, len(parts) + 1):
        whole = length == len(parts)
        if whole and dir_only and not is_dir:
            continue
        if _segments_match(segments, parts[:length]):
            return True
    return False


def oracle_decides(rules: Sequence[Rule], path: str, *, is_dir: bool = False) -> bool:
    for rule in reversed(rules):
        if oracle_matches(rule.pattern, path, is_dir=is_dir):
            return rule.kind == INCLUDE
    return not (rules and rules[0].kind == INCLUDE)


# Small alphabets, so that patterns and paths often meet.
NAMES = st.sampled_from(["a", "b", "ab", "ba", ".a", "a.log", "b.txt", "x y"])
PATHS = st.lists(NAMES, min_size=1, max_size=5).map("/".join)
PATTERN_SEGMENTS = st.sampled_from(["a", "b", "*", "?", "a*", "*b", "*.log", "[ab]", "[!a]*", "?b", "**", ".*"])


@st.composite
def patterns(draw: st.DrawFn) -> str:
    segments = draw(st.lists(PATTERN_SEGMENTS, min_size=1, max_size=4))
    text = "/".join(segments)
    if draw(st.booleans()) and draw(st.booleans()):
        text = "/" + text
    if draw(st.booleans()) and draw(st.booleans()):
        text += "/"
    return text


RULES = st.lists(st.builds(Rule, st.sampled_from([INCLUDE, EXCLUDE]), patterns()), max_size=5)


# ======================================================================================================
# The matcher
# ======================================================================================================


@settings(max_examples=600, deadline=None)
@given(pattern=patterns(), path=PATHS)
def test_one_rule_matches_as_documented(pattern: str, path: str) -> None:
    exclude = FileFilter([Rule(EXCLUDE, pattern)])
    assert exclude.includes_file(path) is not oracle_matches(pattern, path, is_dir=False)
    assert exclude.includes_dir(path) is not oracle_matches(pattern, path, is_dir=True)


@settings(max_examples=600, deadline=None)
@given(rules=RULES, path=PATHS)
def test_the_last_matching_rule_decides(rules: list[Rule], path: str) -> None:
    compiled = FileFilter(rules)
    assert compiled.includes_file(path) is oracle_decides(rules, path)
    assert compiled.includes_dir(path) is oracle_decides(rules, path, is_dir=True)


@settings(max_examples=400, deadline=None)
@given(
    include=st.lists(patterns(), max_size=3),
    exclude=st.lists(patterns(), max_size=3),
    path=PATHS,
)
def test_keyword_form_excludes_win_and_includes_restrict(include: list[str], exclude: list[str], path: str) -> None:
    compiled = FileFilter.from_lists(include=include, exclude=exclude)
    admitted = not include or any(oracle_matches(p, path, is_dir=False) for p in include)
    refused = any(oracle_matches(p, path, is_dir=False) for p in exclude)
    assert compiled.includes_file(path) is (admitted and not refused)


@settings(max_examples=400, deadline=None)
@given(rules=RULES, directory=PATHS, below=st.lists(PATHS, min_size=1, max_size=4))
def test_a_pruned_directory_has_nothing_publishable_below(rules: list[Rule], directory: str, below: list[str]) -> None:
    compiled = FileFilter(rules)
    if compiled.prunes_dir(directory):
        for rest in below:
            assert not compiled.includes_file(f"{directory}/{rest}")
            assert not compiled.includes_dir(f"{directory}/{rest}")


def test_no_rule_publishes_everything() -> None:
    everything = FileFilter()
    assert not everything.active
    assert everything.includes_file("a/b/c.txt")
    assert everything.includes_dir("a")
    assert not everything.prunes_dir("a")
    assert FileFilter.from_lists() == everything


@pytest.mark.parametrize(
    ("rules", "published", "refused"),
    [
        # A name without '/' matches at any depth; '*' never crosses '/'.
        ([(EXCLUDE, "*.log")], ["a.txt", "logs/x.txt"], ["app.log", "logs/2026/app.log"]),
        ([(EXCLUDE, "logs/*.log")], ["logs/2026/a.log", "x/logs/a.log", "a.log"], ["logs/a.log"]),
        ([(EXCLUDE, "/*.log")], ["logs/a.log"], ["a.log"]),
        # '**' as a whole segment.
        ([(EXCLUDE, "logs/**")], ["logs", "x/logs/a"], ["logs/a", "logs/a/b/c"]),
        ([(EXCLUDE, "a/**/b")], ["a/c", "b"], ["a/b", "a/x/b", "a/x/y/b", "a/x/b/inside"]),
        ([(EXCLUDE, "**/cache")], ["cached/x"], ["cache", "cache/x", "a/b/cache/x"]),
        ([(EXCLUDE, "**")], [], ["a", "a/b"]),
        # A trailing '/' matches directories only (and so everything below them).
        ([(EXCLUDE, "cache/")], ["cache", "a/cache"], ["cache/x", "a/cache/x"]),
        # A pattern matching a directory matches what is below it.
        ([(EXCLUDE, "node_modules")], ["src/a.js"], ["node_modules", "a/node_modules/x/y.js"]),
        # The aws idiom, and the s5cmd one: the first rule is an include, so only includes admit.
        ([(EXCLUDE, "*"), (INCLUDE, "*.csv")], ["a.csv", "d/b.csv"], ["a.txt", "d/b.txt"]),
        ([(INCLUDE, "*.csv")], ["a.csv", "d/b.csv"], ["a.txt"]),
        ([(INCLUDE, "*.csv"), (EXCLUDE, "tmp/**")], ["a.csv"], ["tmp/a.csv", "a.txt"]),
        # A later include re-admits what an exclude took out.
        ([(EXCLUDE, "*.log"), (INCLUDE, "keep.log")], ["keep.log", "x/keep.log", "a.txt"], ["a.log"]),
        ([(EXCLUDE, "cache/"), (INCLUDE, "*.txt")], ["cache/notes.txt"], ["cache/x.bin"]),
        # '?', classes, negated classes, literal ']' first, escapes; dot files are matched by '*'.
        ([(EXCLUDE, "?.txt")], ["ab.txt", ".txt"], ["a.txt"]),
        ([(EXCLUDE, "[ab].txt")], ["c.txt"], ["a.txt", "b.txt"]),
        ([(EXCLUDE, "[!ab].txt")], ["a.txt"], ["c.txt"]),
        ([(EXCLUDE, "[^ab].txt")], ["a.txt"], ["c.txt"]),
        ([(EXCLUDE, "[a-c]1")], ["d1"], ["b1"]),
        ([(EXCLUDE, "[]x]")], ["y"], ["]", "x"]),
        ([(EXCLUDE, r"\*")], ["a"], ["*"]),
        ([(EXCLUDE, r"a\[1]")], ["a1"], ["a[1]"]),
        ([(EXCLUDE, "*")], [], [".env", "a/.hidden"]),
        # Case-sensitive, like S3 keys.
        ([(EXCLUDE, "*.CSV")], ["a.csv"], ["a.CSV"]),
        # Regex characters in names are literal.
        ([(EXCLUDE, "a+b(1).txt")], ["aab(1).txt"], ["a+b(1).txt"]),
    ],
)
def test_documented_examples(rules: list[tuple[str, str]], published: list[str], refused: list[str]) -> None:
    compiled = FileFilter(Rule(kind, pattern) for kind, pattern in rules)
    assert [p for p in published if not compiled.includes_file(p)] == []
    assert [p for p in refused if compiled.includes_file(p)] == []


def test_empty_directories_follow_the_rules() -> None:
    compiled = FileFilter([Rule(EXCLUDE, "tmp/"), Rule(EXCLUDE, "*.log")])
    assert compiled.includes_dir("empty")
    assert not compiled.includes_dir("tmp")
    assert not compiled.includes_dir("a/tmp/empty")
    only_csv = FileFilter([Rule(INCLUDE, "*.csv")])
    assert not only_csv.includes_dir("empty")  # nothing admits it


def test_prunes_only_what_no_later_include_can_reach() -> None:
    assert FileFilter([Rule(EXCLUDE, "build/")]).prunes_dir("build")
    assert FileFilter([Rule(EXCLUDE, "build/**")]).prunes_dir("build/x")
    assert not FileFilter([Rule(EXCLUDE, "build/**")]).prunes_dir("build")  # 'build/**' is below it
    assert not FileFilter([Rule(EXCLUDE, "build/"), Rule(INCLUDE, "*.txt")]).prunes_dir("build")
    assert FileFilter([Rule(INCLUDE, "*.txt"), Rule(EXCLUDE, "build/")]).prunes_dir("a/build")
    assert not FileFilter([Rule(INCLUDE, "*.csv")]).prunes_dir("anything")


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("", "non-empty glob"),
        ("a//b", "an empty segment"),
        ("./a", "a '.' segment"),
        ("a/../b", "a '..' segment"),
        ("/", "an empty segment"),
        ("a**", "'**' must be a whole path segment"),
        ("**.log", "'**' must be a whole path segment"),
        ("a[bc", "never closed"),
        ("a[b/c]", "never closed"),
        ("a\\", "lone '\\'"),
        ("[z-a]", "bad character range"),
        ("a\x00b", "NUL"),
    ],
)
def test_invalid_patterns_are_refused_with_the_reason(pattern: str, message: str) -> None:
    with pytest.raises(InvalidSpecError) as caught:
        FileFilter.from_lists(exclude=[pattern])
    assert message in str(caught.value)
    assert repr(pattern) in str(caught.value)
    assert "exclude pattern" in str(caught.value)


def test_keyword_form_takes_one_string_as_one_pattern_and_refuses_other_types() -> None:
    assert FileFilter.from_lists(include="*.csv") == FileFilter([Rule(INCLUDE, "*.csv")])
    with pytest.raises(InvalidSpecError, match="list of glob strings"):
        FileFilter.from_lists(exclude=[3])  # type: ignore[list-item]
    with pytest.raises(InvalidSpecError, match="'include' or 'exclude'"):
        Rule("skip", "*.log")


def test_describe_shows_the_rules_as_flags() -> None:
    assert FileFilter.from_lists(include=["*.csv"], exclude=["tmp/"]).describe() == "--include '*.csv' --exclude 'tmp/'"


# ======================================================================================================
# collect_source with filters
# ======================================================================================================


def _tree(root: Path, files: dict[str, bytes], empty_dirs: Sequence[str] = ()) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    for rel in empty_dirs:
        (root / rel).mkdir(parents=True, exist_ok=True)
    return root


TREE = {
    "report.csv": b"a,b\n1,2\n",
    "notes.txt": b"notes\n",
    "run.log": b"log\n",
    "data/part-0.csv": b"0\n",
    "data/part-1.csv": b"1\n",
    "data/tmp/scratch.csv": b"scratch\n",
    "logs/2026/app.log": b"app\n",
    ".env": b"SECRET=1\n",
}


def test_collect_source_lists_only_published_files_and_their_directories(tmp_path: Path) -> None:
    from airflow_s3_publisher.sources import collect_source

    root = _tree(tmp_path / "src", TREE, empty_dirs=["empty", "logs/empty"])
    entries = collect_source(root, FileFilter.from_lists(include=["*.csv"], exclude=["tmp/", ".env"]))
    assert [(e.relpath, e.is_dir) for e in entries] == [
        ("data", True),
        ("data/part-0.csv", False),
        ("data/part-1.csv", False),
        ("report.csv", False),
    ]
    entries = collect_source(root, FileFilter.from_lists(exclude=["*.log"]))
    listed = {e.relpath for e in entries}
    assert {"empty", "logs", "logs/empty", "logs/2026"} & listed == {"empty", "logs", "logs/empty"}
    assert {e.relpath for e in entries if not e.is_dir} == set(TREE) - {"run.log", "logs/2026/app.log"}


def test_excluded_files_are_never_opened_nor_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A FIFO, a broken link and a link out of the source are refused when published, and do not
    matter when excluded; no excluded path is ever opened."""
    from airflow_s3_publisher.sources import collect_source

    root = _tree(tmp_path / "src", {"keep.txt": b"keep\n", "secret/key.pem": b"KEY\n"})
    os.mkfifo(root / "pipe")
    (root / "dangling").symlink_to(root / "missing")
    (root / "outside").symlink_to(tmp_path)
    (root / "cache").mkdir()
    (root / "cache" / "loop").symlink_to(root / "cache")
    with pytest.raises(SourceError, match="FIFO|broken symlink|outside|loop"):
        collect_source(root)

    opened: list[str] = []
    real_open = os.open

    def spy(path: str | os.PathLike[str], *args: object, **kwargs: object) -> int:
        opened.append(os.fspath(path))
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", spy)
    rules = {"exclude": ["pipe", "dangling", "outside", "cache/", "secret/"]}
    entries = collect_source(root, FileFilter.from_lists(**rules))
    assert [e.relpath for e in entries] == ["keep.txt"]

    from airflow_s3_publisher.archive import write_tar_gz

    sink = io.BytesIO()
    write_tar_gz(entries, sink)
    with tarfile.open(fileobj=io.BytesIO(sink.getvalue()), mode="r:gz") as tar:
        assert tar.getnames() == ["keep.txt"]
    excluded = [str(root / name) for name in ("pipe", "dangling", "outside", "cache", "secret")]
    assert [p for p in opened if any(p == e or p.startswith(e + os.sep) for e in excluded)] == []
    assert any(p.endswith("keep.txt") for p in opened)  # the spy sees the opens that do happen


def test_a_single_file_source_is_filtered_by_its_name(tmp_path: Path) -> None:
    from airflow_s3_publisher.sources import collect_source

    path = tmp_path / "out.log"
    path.write_bytes(b"x")
    assert [e.relpath for e in collect_source(path, FileFilter.from_lists(exclude=["*.txt"]))] == ["out.log"]
    assert collect_source(path, FileFilter.from_lists(exclude=["*.log"])) == []


# ======================================================================================================
# publish() with filters, against SeaweedFS: plain (with manifest) and compressed
# ======================================================================================================

PUBLISHED = {"report.csv", "data/part-0.csv", "data/part-1.csv"}


@pytest.fixture
def filtered_source(tmp_path: Path) -> Path:
    root = _tree(tmp_path / "src", TREE, empty_dirs=["empty"])
    os.mkfifo(root / "data" / "tmp" / "pipe")  # would block or be refused if it were ever opened
    return root


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every path os.open() is called with during the test."""
    seen: list[str] = []
    real_open = os.open

    def spy(path: str | os.PathLike[str], *args: object, **kwargs: object) -> int:
        seen.append(os.fspath(path))
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", spy)
    return seen


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "compressed"])
def test_publish_stores_exactly_the_filtered_files(
    filtered_source: Path,
    opened: list[str],
    compress: bool,
    seaweed: SeaweedServer,
    versioned_bucket: str,
    s3_admin: S3Client,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from airflow_s3_publisher import fetch, publish

    conn = use_connection(monkeypatch, "s3_admin", seaweed, ADMIN)
    result = publish(
        filtered_source,
        bucket=versioned_bucket,
        key="filtered",
        compress=compress,
        manifest=not compress,
        include=["*.csv"],
        exclude=["tmp/", ".env"],
        aws_conn_id=conn,
    )
    stored = objects_below(s3_admin, versioned_bucket)
    if compress:
        assert list(stored) == [result.key]
        with tarfile.open(fileobj=io.BytesIO(stored[result.key]), mode="r:gz") as tar:
            members = {m.name: m for m in tar.getmembers()}
        assert {n for n, m in members.items() if m.isfile()} == PUBLISHED
        assert {n for n, m in members.items() if m.isdir()} == {"data"}  # no empty/, no data/tmp/
        assert archive_members(stored[result.key]) == {rel: TREE[rel] for rel in PUBLISHED}
    else:
        assert set(stored) == {result.key + rel for rel in PUBLISHED} | {result.key + MANIFEST_NAME}
        manifest = parse_manifest(stored[result.key + MANIFEST_NAME], "manifest")
        assert {e.path for e in manifest} == PUBLISHED
        assert result.checksum_sha256 == sha256_b64(stored[result.key + MANIFEST_NAME])
    excluded = [str(filtered_source / rel) for rel in set(TREE) - PUBLISHED] + [str(filtered_source / "data/tmp")]
    assert [p for p in opened if any(p == e or p.startswith(e + os.sep) for e in excluded)] == []

    fetched = fetch(result, tmp_path / "fetched", aws_conn_id=conn)
    assert read_tree(fetched) == {rel: TREE[rel] for rel in PUBLISHED}


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "compressed"])
def test_a_filter_that_leaves_nothing_is_an_empty_source(
    filtered_source: Path,
    compress: bool,
    seaweed: SeaweedServer,
    bucket: str,
    s3_admin: S3Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow_s3_publisher import publish

    conn = use_connection(monkeypatch, "s3_admin", seaweed, ADMIN)
    with pytest.raises(SourceError, match=r"no file to publish that passes the filters --include '\*.parquet'"):
        publish(filtered_source, bucket=bucket, key="none", compress=compress, include="*.parquet", aws_conn_id=conn)
    assert objects_below(s3_admin, bucket) == {}

    result = publish(
        filtered_source,
        bucket=bucket,
        key="none",
        compress=compress,
        include="*.parquet",
        allow_empty=True,
        aws_conn_id=conn,
    )
    stored = objects_below(s3_admin, bucket)
    if compress:
        assert list(stored) == [result.key]
        assert archive_members(stored[result.key]) == {}
    else:
        assert stored == {}


def test_ordered_rules_and_keywords_are_exclusive(filtered_source: Path) -> None:
    from airflow_s3_publisher import publish

    rules = FileFilter([Rule(EXCLUDE, "*"), Rule(INCLUDE, "*.csv")])
    with pytest.raises(InvalidSpecError, match="not both"):
        publish(filtered_source, bucket="bkt", key="k", include=["*.csv"], file_filter=rules)


def test_operator_and_decorator_take_include_and_exclude(airflow_db: Path) -> None:
    from airflow.sdk import DAG, task

    from airflow_s3_publisher import S3PublishOperator

    with DAG("filters_parse", schedule=None):
        operator = S3PublishOperator(
            task_id="publish", source="/data", bucket="bkt", key="k", include=["*.csv"], exclude=["tmp/"]
        )

        @task.s3_publish(bucket="bkt", key="k", exclude="*.log")
        def produce(output_dir: str) -> None:
            pass

        decorated = produce().operator
    assert operator.settings.rules == FileFilter.from_lists(include=["*.csv"], exclude=["tmp/"])
    assert decorated.settings.rules == FileFilter.from_lists(exclude=["*.log"])
    with pytest.raises(InvalidSpecError, match="'\\*\\*' must be a whole path segment"):
        S3PublishOperator(task_id="bad", source="/data", bucket="bkt", key="k", exclude=["**.log"])
