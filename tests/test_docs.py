"""The documentation tells the truth: its snippets run, its links stay in the repository, its tables match the code.

Covers README.md, CONTRIBUTING.md and every docs/*.md. Python snippets are compiled everywhere and run
(they define DAGs and tasks; nothing is uploaded) on the pages in ``EXECUTED``.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pytest

from airflow_s3_publisher import PublishedResult
from airflow_s3_publisher.cli import build_parser
from airflow_s3_publisher.cli import common as cli_common
from airflow_s3_publisher.naming import PLACEHOLDERS

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "airflow_s3_publisher"
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [README, REPO / "CONTRIBUTING.md", *DOCS]
#: Pages whose Python snippets are run, not only compiled: each defines DAGs and tasks as pasted.
EXECUTED = ("README.md", "docs/reference.md", "docs/stores.md")
#: Pages the README links to that other branches of issue 12 add; their links are checked once they exist.
#: Pages the README promises for topics written apart (they must exist and be linked).
PROMISED_PAGES = ("docs/deployment.md", "docs/shell.md")

LAYERS = ("core", "s3", "transfer", "shell")
#: Third-party packages only the s3 layer and the shell may import.
BOUNDARY_PACKAGES = ("airflow", "boto3", "botocore", "mypy_boto3_s3")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: Path
    line: int
    lang: str
    code: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def code_blocks(page: Path) -> list[Block]:
    """Every fenced (```) block of ``page``, with the line its code starts on."""
    blocks: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    start: int | None = None
    lang = ""
    body: list[str] = []
    for number, line in enumerate(lines, 1):
        if start is None and line.startswith("```"):
            start, lang, body = number + 1, line[3:].strip(), []
        elif start is not None and line.startswith("```"):
            blocks.append(Block(page, start, lang, "\n".join(body) + "\n"))
            start = None
        elif start is not None:
            body.append(line)
    assert start is None, f"{page.relative_to(REPO)}: a code block opened on line {start - 1} is never closed"
    return blocks


def prose(page: Path) -> str:
    """``page`` without its code blocks and code spans: the text a renderer turns into links and headings."""
    text = page.read_text(encoding="utf-8")
    text = re.sub(r"^```.*?^```[^\n]*$", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for the headings of ``page`` (lower case, punctuation dropped, spaces to '-')."""
    text = page.read_text(encoding="utf-8")
    text = re.sub(r"^```.*?^```[^\n]*$", "", text, flags=re.S | re.M)
    found: set[str] = set()
    for match in re.finditer(r"^#{1,6}\s+(.+?)\s*#*$", text, flags=re.M):
        title = match.group(1).lower()
        slug = "".join(ch for ch in title if ch in " -_" or unicodedata.category(ch)[0] in "LN").replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


def links(page: Path) -> list[str]:
    """Targets of the inline links and images of ``page`` (outside code)."""
    return [m.group(1).strip() for m in re.finditer(r"!?\[[^\]]*\]\(([^)\s]*)(?:\s+\"[^\"]*\")?\)", prose(page))]


def python_blocks(pages: list[Path]) -> list[Block]:
    return [b for page in pages for b in code_blocks(page) if b.lang in ("python", "py")]


# ------------------------------------------------------------------------------------------------------
# Snippets
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("block", python_blocks([README, *DOCS]), ids=lambda b: b.where)
def test_python_snippets_compile(block: Block) -> None:
    compile(block.code, block.where, "exec")


@pytest.mark.parametrize(
    "block", python_blocks([REPO / page for page in EXECUTED if (REPO / page).exists()]), ids=lambda b: b.where
)
def test_python_snippets_run_as_pasted(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each snippet on its own, in a fresh namespace: its imports are enough and its settings are valid."""
    monkeypatch.chdir(tmp_path)
    exec(compile(block.code, block.where, "exec"), {"__name__": "docs_snippet"})  # noqa: S102


@pytest.mark.parametrize(
    "block", [b for page in PAGES for b in code_blocks(page) if b.lang == "json"], ids=lambda b: b.where
)
def test_json_snippets_parse(block: Block) -> None:
    value = json.loads(block.code)
    if isinstance(value, dict) and "Params" in value:
        PublishedResult.from_dict(value)  # a PublishedResult shown in the docs is one fetch() accepts


def test_every_code_block_names_its_language() -> None:
    """An untagged block would escape the checks above (and the highlighting)."""
    untagged = [block.where for page in PAGES for block in code_blocks(page) if not block.lang]
    assert not untagged, f"code blocks without a language tag: {untagged}"


# ------------------------------------------------------------------------------------------------------
# Links
# ------------------------------------------------------------------------------------------------------


def test_every_link_stays_in_the_repository_and_resolves() -> None:
    problems: list[str] = []
    for page in PAGES:
        shown = page.relative_to(REPO)
        known_anchors = {page: anchors(page)}
        for target in links(page):
            path_part, _, anchor = target.partition("#")
            if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", target) or target.startswith("//"):
                problems.append(f"{shown}: {target!r} leaves the repository")
                continue
            if target.startswith("/") or "/work" in target or "shared/" in target:
                problems.append(f"{shown}: {target!r} is not a path inside the repository")
                continue
            if page.parent == REPO and target.startswith("../"):
                problems.append(f"{shown}: {target!r} starts with '../'")
                continue
            resolved = (page.parent / path_part).resolve() if path_part else page
            if not resolved.is_relative_to(REPO):
                problems.append(f"{shown}: {target!r} resolves outside the repository")
                continue
            if not resolved.exists():
                problems.append(f"{shown}: {target!r} does not exist")
                continue
            if anchor and resolved.suffix == ".md":
                if resolved not in known_anchors:
                    known_anchors[resolved] = anchors(resolved)
                if anchor not in known_anchors[resolved]:
                    problems.append(f"{shown}: {target!r} names no heading of {resolved.relative_to(REPO)}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", PROMISED_PAGES)
def test_pages_the_readme_promises_exist(page: str) -> None:
    assert any(target.split("#")[0] == page for target in links(README)), f"the README should link to {page}"
    assert (REPO / page).is_file(), page


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_bare_urls_or_paths_outside_the_repository(page: Path) -> None:
    """A bare URL in prose becomes a link on GitHub; the shared spec and the work tree are not in the repo."""
    text = prose(page)
    assert not re.findall(r"https?://\S+|www\.\S+", text), "bare URLs become links that leave the repository"
    full = page.read_text(encoding="utf-8")
    assert "../shared" not in full
    assert "/work/" not in full


def test_the_readme_shows_the_two_commands_and_is_short() -> None:
    text = README.read_text(encoding="utf-8")
    bash = "".join(b.code for b in code_blocks(README) if b.lang == "bash")
    assert "./scripts/test.sh" in bash
    assert "./scripts/demo.sh" in bash
    assert 150 <= len(text.splitlines()) <= 200


# ------------------------------------------------------------------------------------------------------
# Tables and commands that must match the code
# ------------------------------------------------------------------------------------------------------


def section(page: Path, heading: str) -> str:
    """The text under ``heading`` (a full heading line) up to the next heading of any level."""
    text = page.read_text(encoding="utf-8")
    start = text.index(heading + "\n") + len(heading) + 1
    following = re.search(r"^#{1,6} ", text[start:], flags=re.M)
    return text[start : start + following.start()] if following else text[start:]


def test_the_readme_placeholder_table_is_the_code_s() -> None:
    rows = re.findall(r"^\| `\{(\w+)\}` \|", section(README, "## Placeholders"), flags=re.M)
    assert rows == list(PLACEHOLDERS)


def test_the_exit_code_table_is_the_cli_s() -> None:
    rows = re.findall(r"^\| (\d+) \|", section(REPO / "docs" / "reference.md", "### Exit codes"), flags=re.M)
    codes = {
        cli_common.EXIT_OK,
        cli_common.EXIT_ERROR,
        cli_common.EXIT_USAGE,
        cli_common.EXIT_INTEGRITY,
        cli_common.EXIT_S3,
        cli_common.EXIT_INTERRUPTED,
    }
    assert sorted(int(code) for code in rows) == sorted(codes)


def command_lines() -> list[tuple[str, str]]:
    """Every ``airflow-s3-publisher ...`` invocation in the bash blocks, with where it is."""
    found: list[tuple[str, str]] = []
    for page in PAGES:
        for block in code_blocks(page):
            if block.lang != "bash":
                continue
            for logical in block.code.replace("\\\n", " ").splitlines():
                for match in re.finditer(r"(?:^|[\s(|])airflow-s3-publisher\b([^|)\n]*)", logical):
                    found.append((block.where, match.group(1)))
    return found


@pytest.mark.parametrize(("where", "arguments"), command_lines(), ids=[w for w, _ in command_lines()])
def test_documented_command_lines_parse(where: str, arguments: str) -> None:
    argv = shlex.split(arguments, comments=True)
    args = build_parser().parse_args(argv)
    assert args.command == argv[0]


def test_there_are_documented_command_lines() -> None:
    assert {arguments.split()[0] for _, arguments in command_lines()} >= {"get", "presign", "render"}


# ------------------------------------------------------------------------------------------------------
# The module map of docs/architecture.md
# ------------------------------------------------------------------------------------------------------


def module_map() -> dict[str, str]:
    """Module path (relative to the package) -> layer, from the table of docs/architecture.md."""
    table = section(REPO / "docs" / "architecture.md", "## Module map")
    rows = re.findall(r"^\| `([\w/]+\.py)` \| (\w+) \|", table, flags=re.M)
    mapped = dict(rows)
    assert len(mapped) == len(rows), "a module is listed twice"
    return mapped


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


#: Upward imports made on purpose, each only inside the function that needs it.
ALLOWED_UPWARD = {
    # PublishedResult.object_storage_path() (issue 11) builds Airflow's ObjectStoragePath when called.
    ("airflow_s3_publisher.result", "airflow_s3_publisher.objectstorage"),
    ("airflow_s3_publisher.result", "airflow_s3_publisher.objectstorage.object_storage_path"),
}


def _type_checking_only(tree: ast.AST) -> set[ast.AST]:
    """Import nodes under ``if TYPE_CHECKING:``: types for mypy, never imported at run time."""
    nodes: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for child in node.body:
                nodes.update(ast.walk(child))
    return nodes


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, at any level of the file (TYPE_CHECKING and function bodies included)."""
    found: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_checking_only(tree)
    for node in ast.walk(tree):
        if node in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_the_module_map_lists_every_module_once() -> None:
    actual = {path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py")}
    mapped = module_map()
    assert set(mapped) == actual
    assert set(mapped.values()) <= set(LAYERS)


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    mapped = module_map()
    layer_of = {module_name(PACKAGE / path): LAYERS.index(layer) for path, layer in mapped.items()}
    problems: list[str] = []
    for path, layer in mapped.items():
        module = module_name(PACKAGE / path)
        for imported in sorted(imports_of(PACKAGE / path)):
            if (module, imported) in ALLOWED_UPWARD:
                continue
            top = imported.split(".")[0]
            if imported in layer_of and layer_of[imported] > LAYERS.index(layer):
                problems.append(f"{module} ({layer}) imports {imported} ({LAYERS[layer_of[imported]]})")
            if layer in ("core", "transfer") and top in BOUNDARY_PACKAGES:
                problems.append(f"{module} ({layer}) imports {imported}")
    assert not problems, "\n".join(problems)
