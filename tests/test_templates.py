"""Template hygiene that no rendering test would notice until a person did."""

from __future__ import annotations

from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def test_no_comment_tag_spans_lines():
    """``{# ... #}`` ends at the end of its line: a second line would be shown on the page as text (an export page
    once said "{# novalidate: ..." to its readers). Longer comments use ``{% comment %}``."""
    broken = [
        f"{path.relative_to(TEMPLATES)}:{number}"
        for path in sorted(TEMPLATES.rglob("*.html"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if "{#" in line and "#}" not in line[line.index("{#") :]
    ]
    assert broken == []
