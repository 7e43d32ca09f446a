"""Every code sample in README.md and docs/*.md is exercised, and every relative link leads somewhere.

Shell lines are checked without running anything: a ``manage.py`` command must exist and its arguments must parse with
the command's own parser; a ``make`` target must be in the Makefile; a local URL must resolve to a view; a script or
file a line names must exist. ``python`` blocks compile, ``json`` blocks parse (the replay hook examples also validate
against the hook contract). A block that is not meant to run says so with the info string ``text``.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.core.management import get_commands, load_command_class
from django.urls import Resolver404, resolve

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"sh", "bash", "console"}
KINDS = SHELL | {"python", "json", "text"}
# The port `make run` serves on; URLs on it in the docs must be URLs of this app.
LOCAL_URL = re.compile(r"https?://(?:127\.0\.0\.1|localhost):8000(/[^\s\"'`]*)?")
FENCE = re.compile(r"^(```|~~~)\s*([\w+-]*)\s*$")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
INLINE_CODE = re.compile(r"`[^`]*`")
ENV_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")
MAX_IMAGE_BYTES, MAX_IMAGES_BYTES = 200 * 1024, 1024 * 1024


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    kind: str
    text: str

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def _split(page: Path) -> tuple[list[Block], list[str]]:
    """The page's fenced blocks, and its prose lines (blocks blanked out, so line numbers stay)."""
    blocks, prose, opened = [], [], None
    for number, line in enumerate(page.read_text().splitlines(), start=1):
        fence = FENCE.match(line)
        if opened is None and fence:
            opened, body = (number, fence[2]), []
        elif opened is not None and fence and not fence[2]:
            blocks.append(Block(page, opened[0], opened[1], "\n".join(body)))
            opened = None
        elif opened is not None:
            body.append(line)
        prose.append(line if opened is None and not fence else "")
    assert opened is None, f"{page.name}: the code block opened on line {opened[0]} is never closed"
    return blocks, prose


BLOCKS = [block for page in PAGES for block in _split(page)[0]]


def _shell_lines(block: Block) -> list[str]:
    """Logical lines: continuations joined, console prompts dropped, blank lines and comments skipped."""
    lines, pending = [], ""
    for raw in block.text.splitlines():
        line = raw[2:] if block.kind == "console" and raw.startswith("$ ") else raw
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.strip() and not line.lstrip().startswith("#"):
            lines.append(line)
    return lines


def _makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", text, flags=re.MULTILINE))


def _check_manage_py(args: list[str]) -> None:
    assert args, "manage.py without a command"
    name, rest = args[0], [re.sub(r"^<[^>]+>$", "x", a) for a in args[1:]]
    commands = get_commands()
    assert name in commands, f"no management command {name!r}"
    command = load_command_class(commands[name], name)
    command.create_parser("manage.py", name).parse_args(rest)  # a CommandError says which argument is wrong


def _check_url(path: str) -> None:
    try:
        resolve(urlsplit(path or "/").path)
    except Resolver404:
        raise AssertionError(f"{path} resolves to no view") from None


def _check_python(args: list[str]) -> None:
    if args[:2] == ["-m", "pytest"]:  # the paths it is given must exist
        paths = [a.split("::")[0] for a in args[2:] if not a.startswith("-")]
        assert all((ROOT / p).exists() for p in paths), f"no such test paths: {paths}"
        return
    script = args[0]
    assert (ROOT / script).is_file(), f"{script} does not exist"


def _check_shell_line(line: str, targets: set[str]) -> None:
    for match in LOCAL_URL.finditer(line):
        _check_url(match[1])
    tokens = shlex.split(line, comments=True)
    while tokens and ENV_ASSIGNMENT.match(tokens[0]):
        tokens.pop(0)
    if not tokens:  # only environment assignments (their URLs were checked above)
        return
    if "manage.py" in tokens:
        _check_manage_py(tokens[tokens.index("manage.py") + 1 :])
    elif tokens[0] == "make":
        named = [t for t in tokens[1:] if not t.startswith("-") and "=" not in t]
        assert named, "make without a target: name it, the docs should not rely on the default"
        assert set(named) <= targets, f"not Makefile targets: {sorted(set(named) - targets)}"
    elif tokens[0] == "curl":
        assert LOCAL_URL.search(line), "a curl example must call this app on 127.0.0.1:8000"
    elif tokens[0].endswith("python") or tokens[0] == "python3":
        _check_python(tokens[1:])
    elif tokens[:2] == ["docker", "compose"]:
        assert "-f" in tokens and (ROOT / tokens[tokens.index("-f") + 1]).is_file(), "compose file missing"
    elif tokens[0] == "cp":
        assert (ROOT / tokens[1]).is_file(), f"{tokens[1]} does not exist"
    else:
        pytest.fail(f"no check knows {tokens[0]!r}: teach tests/test_docs.py, or mark the block ```text")


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.kind in SHELL], ids=str)
def test_every_shell_line_names_a_real_command_target_url_or_file(block: Block) -> None:
    targets = _makefile_targets()
    lines = _shell_lines(block)
    assert lines, "an empty shell block"
    for line in lines:
        try:
            _check_shell_line(line, targets)
        except Exception as exc:
            raise AssertionError(f"{block}: {line.strip()}\n{exc}") from exc


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.kind == "python"], ids=str)
def test_every_python_block_compiles(block: Block) -> None:
    compile(block.text, str(block), "exec")


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.kind == "json"], ids=str)
def test_every_json_block_parses_and_hook_examples_follow_the_contract(block: Block) -> None:
    from attribution.replay.hook_contract import ReplayRequest, ReplayResponse

    document = json.loads(block.text)
    if document.get("version") == "culprit.replay/1" and document.get("action") == "replay":
        ReplayRequest.model_validate_json(block.text)
    elif "continuation" in document:
        ReplayResponse.model_validate_json(block.text)


# Paths of this app quoted in prose (`GET /api/jobs/{id}`, `/annotations/queues/<id>/agreement/`).
PROSE_PATH = re.compile(
    r"^(?:(?:GET|POST|PUT|PATCH|DELETE) )?(/(?:api/|annotations/|attribution/|accounts/|admin/|"
    r"healthz$|v1/traces$)\S*)$"
)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_path_quoted_in_prose_resolves_to_a_view(page: Path) -> None:
    spans = [span.strip("`") for span in INLINE_CODE.findall("\n".join(_split(page)[1]))]
    paths = [match[1] for span in spans if (match := PROSE_PATH.match(span))]
    for path in paths:
        _check_url(re.sub(r"<slug>", "demo", re.sub(r"<id>|\{id\}", "1", path)))


def test_every_fenced_block_says_what_it_is() -> None:
    unlabelled = [f"{b} ({b.kind or 'no info string'})" for b in BLOCKS if b.kind not in KINDS]
    assert not unlabelled, f"label these blocks with one of {sorted(KINDS)}: {unlabelled}"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for line in _split(page)[1]:
        if match := re.match(r"^#{1,6}\s+(.*)$", line):
            slug = _slug(match[1])
            anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _links(page: Path) -> list[tuple[int, str]]:
    found = []
    for number, line in enumerate(_split(page)[1], start=1):
        found += [(number, target) for target in LINK.findall(INLINE_CODE.sub("", line))]
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file_and_heading_that_exist(page: Path) -> None:
    broken = []
    for number, target in _links(page):
        if re.match(r"^[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.is_relative_to(ROOT) or not file.exists():
            broken.append(f"line {number}: {target} (no such file in the repository)")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"line {number}: {target} (no heading with that anchor)")
    assert not broken, f"{page.name}: {broken}"


def test_the_readme_is_a_map_of_every_docs_page_and_states_both_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    blocks = {(b.kind, b.text.strip()) for b in BLOCKS if b.page.name == "README.md"}
    assert {("sh", "make run"), ("sh", "make test")} <= blocks
    assert ("text", "Log in at http://127.0.0.1:8000/ as  demo / <password>") in blocks
    linked = {target.split("#")[0] for _, target in _links(ROOT / "README.md")}
    missing = [p.name for p in PAGES[1:] if f"docs/{p.name}" not in linked]
    assert not missing, f"docs pages the README does not link: {missing}"
    assert "make test" in (ROOT / ".ci" / "run").read_text()


# A variable the settings read from the environment: env_str("CULPRIT_X", ...), os.environ.get("DJANGO_Y"), ...
SETTING_READ = re.compile(r"(?:env_\w+|os\.environ\.get)\(\s*\"((?:CULPRIT|DJANGO)_[A-Z0-9_]+)\"")


def test_every_setting_read_from_the_environment_is_documented() -> None:
    settings_text = (ROOT / "config" / "settings.py").read_text()
    read = set(SETTING_READ.findall(settings_text))
    # The pattern still finds what it is for (a setting read some new way would slip past it).
    assert {"CULPRIT_OUTBOUND_ALLOW", "CULPRIT_TRUSTED_PROXIES", "DJANGO_SECRET_KEY"} <= read
    docs = "\n".join(page.read_text() for page in PAGES[1:])
    missing = sorted(name for name in read if not re.search(rf"\b{name}\b", docs))
    assert not missing, f"settings no docs page names (add them to the table in docs/security.md): {missing}"


def test_the_pictures_are_small_pngs() -> None:
    images = sorted((ROOT / "docs" / "img").glob("*"))
    assert images and all(i.suffix == ".png" and i.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    assert all(i.stat().st_size < MAX_IMAGE_BYTES for i in images), [i.name for i in images]
    assert sum(i.stat().st_size for i in images) < MAX_IMAGES_BYTES


def _matrix_rows(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and not line.startswith("| dataset") and not set(cells[0]) <= {"-"}:
            rows[cells[0]] = cells[1:]
    return rows


def test_the_readme_headline_results_quote_the_attribution_matrix() -> None:
    bench = (ROOT / "bench" / "attribution_matrix.py").read_text()
    parts = re.search(r'^RESULTS_PAGE = _django\.ROOT((?: / "[^"]+")+)$', bench, flags=re.MULTILINE)
    assert parts, "bench/attribution_matrix.py no longer names the page it writes"
    page = ROOT.joinpath(*re.findall(r'"([^"]+)"', parts[1]))
    matrix_text = page.read_text().split("<!-- attribution-matrix:start -->", 1)[1]
    matrix = _matrix_rows(matrix_text.split("<!-- attribution-matrix:end -->", 1)[0])
    headline = _matrix_rows((ROOT / "README.md").read_text().split("## Results", 1)[1].split("\n## ", 1)[0])
    assert headline and set(headline) <= set(matrix), sorted(set(headline) - set(matrix))
    for dataset, (heuristic, learned, baseline) in headline.items():
        row = matrix[
            dataset
        ]  # heuristic, calibrated, learned, schema_guided, counterfactual, baseline agent, step
        best = f"{row[5].split(' (')[0]} / {row[6].split(' (')[0]}"
        quoted = (row[0].split(" <br>")[0], row[2].split(" <br>")[0], best)
        assert (heuristic, learned, baseline) == quoted, dataset


def test_the_pages_count_the_trace_formats_there_are_and_the_format_table_names_each():
    from tracing.formats import all_formats

    names = [fmt.name for fmt in all_formats()]
    for page in (ROOT / "README.md", ROOT / "docs" / "formats.md"):
        counts = {int(n) for n in re.findall(r"\b(\d+) (?:trace )?formats\b", page.read_text())}
        assert counts == {len(names)}, page.name
    table = (ROOT / "docs" / "formats.md").read_text()
    assert [n for n in names if f"`{n}`" not in table] == []
