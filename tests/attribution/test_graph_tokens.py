"""``tokens_of`` finds its tokens from several cheap searches merged together (attribution/graph.py says how); it must
give exactly what one plain pass of ``_TOKEN`` gives, for any text. Checked here against a reference written the
obvious way: on every step of the Who&When traces, on edge cases written by hand, and on many random texts made of
the pieces the branches care about (seeded, so a failure can be replayed)."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator

import pytest

from attribution.graph import _TOKEN, canonical_number, tokens_of
from tests.conftest import whowhen_files

EXTENSIONS = (
    "py csv json jsonl txt pdf xls xlsx doc docx ppt pptx md htm html xml yml yaml ipynb sh js ts zip png jpg jpeg "
    "gif mp3 mp4 wav pdb gff3 gz tsv log sql db"
).split()
# The identifier is ASCII, so ASCII digits are all the features need.
CODE_LIKE = re.compile(r"_|[a-z][A-Z]|[A-Za-z][0-9]|[0-9][A-Za-z]")


def reference_tokens(text: str) -> Iterator[str]:
    """One pass of ``_TOKEN``: plain words of six letters or more are matched (and so swallowed) but not kept."""
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup
        if kind == "url":
            token = match["url"].rstrip(".,;:!?")
        elif match["quoted"] is not None:
            token = match["quoted"].strip()
            if len(token) < 3 or not any(c.isalnum() for c in token):
                continue
        elif kind == "file":
            token = match["file"]
        elif kind == "number":
            token = canonical_number(match["number"])
        else:
            token = match["ident"]
            if not CODE_LIKE.search(token):
                continue  # a plain word: swallowed, not kept
        if len(token) <= 200:
            yield token


EDGE_CASES = [
    "",
    "plain words only, nothing distinctive here because everything is ordinary",
    'He said "hello world", it\'s 5,200,000 or 3.14 (not 7). See https://x.org/a_b. Open data.csv with my_var.',
    # URLs: glued to words before and after, nested, trailing punctuation, without a path, in brackets and quotes
    "Visithttp://example.com now",
    "xhttp://a.b and http://c.d",
    "abcdefhttps://a.b/c_d?x=1,234",
    "see (https://a.org/x.py), then <ftp://f.org/y.csv>!",
    "http:// alone, https://",
    "https://a.org/?u=http://b.org/c.",
    "'https://quoted.org/page' and \"http://dq.org\"",
    "1http://x.y 2ftp://z _https://w",
    "ftp://files.org/pub/data-2023.tar.gz;",
    # quotes: apostrophes in words, nested quote characters, too short, blank, newlines, 80 characters and more
    "it's Bob's 'car' and \"it's\" and `code_here` and 'ab' and '   ' and '!!!'",
    "'a'b' \"x\"y\" `q`r` ''' \"\"\" ``` 'unterminated",
    '"line\nbreak" \'ok one\' "' + "x" * 80 + '" "' + "y" * 81 + '"',
    "word'quoted text' 'quoted text'word \"é quoted\" '٣٣٣'",
    # numbers: thousands separators, decimals, versions, leading dots, glued to letters, unicode digits
    "1,234 12,345,678.90 1,23 1234,567 0.5 .5 1.2.3 v1.2 3.14.15 10.5x x10.5 12ab 5th 25th 2020s",
    "a1,234 (1,234) -1,234 $1,000,000 1,000. 9,999,999,999 00 007 1.0.0 2.5.csv 2023.csv 12,345abc.py",
    "٣٤ ١٢٣ ٣.١٤ 12٣ x٣٣ ٣abcdef_g",
    # files: dashes, dots, unknown extensions, extensions glued to more letters, extension inside a word
    "data.csv my-data.json -lead.py --opt.yaml a--b.md .hidden.txt file.PY file.pyc file.jsonl file.json5",
    "report.final.pdf x.py.csv .py.csv a.b.c.txt my_data.csv 2023-01-01.log data_v2.xlsx é.py naïve.py",
    "path/to/some_file.ipynb C:\\dir\\file.docx file.tar.gz archive.zip,image.jpeg;song.mp3",
    # identifiers: snake and camel case, digits, short ones, non-ASCII letters around them
    "my_var camelCase CamelCase ALLCAPS ALL_CAPS snake_case_name __init__ _private x1 abc123 123abc abcdef1",
    "getHTTPResponse v2_final résumé_file caféLatte naïveBayes xyz_é éabc_def abc_defé under_score2",
    "short_ a_b aB1 abcdE abcdeF foo_bar-baz foo-barBaz a.b_cdef camelCase.method_name()",
    # everything glued together
    'https://x.org/a_b,"quoted_ident",12,345,my_file.py,camelCase,3.5,`code`',
    "\t\n\r \x0b\x0c\u00a0\u2028 mixed\u3000whitespace_here 12\u00a034",
]


def test_every_edge_case_gives_exactly_the_reference_tokens():
    for text in EDGE_CASES:
        assert list(tokens_of(text)) == list(reference_tokens(text)), text


def test_every_file_extension_is_recognised_as_the_reference_does():
    for extension in EXTENSIONS:
        for text in (
            f"see name.{extension} now",
            f"2023.{extension}",
            f"a-b.{extension}x",
            f"-x.{extension}",
        ):
            assert list(tokens_of(text)) == list(reference_tokens(text)), text


PIECES = [
    " ",
    " ",
    " ",
    "\n",
    "\t",
    ",",
    ".",
    ".",
    "-",
    "_",
    ":",
    ";",
    "/",
    "(",
    ")",
    "[",
    "]",
    "<",
    ">",
    "!",
    "?",
    '"',
    '"',
    "'",
    "'",
    "`",
    "\\",
    "0",
    "7",
    "12",
    "1,234",
    "3.14",
    "٣",
    "a",
    "b",
    "x",
    "é",
    "ß",
    "Z",
    "Q",
    "abc",
    "word",
    "hello",
    "because",
    "results",
    "camelCase",
    "my_var",
    "__x",
    "v2",
    "abc123",
    "2nd",
    "http://",
    "https://",
    "ftp://",
    "http",
    "://",
    "x.org",
    "/path_1",
    ".py",
    ".csv",
    ".json",
    ".jsonl",
    "py",
    "data",
    "report.pdf",
    "2023",
    ".5",
    "e5",
    "THE",
    "Name",
    "ids",
    "URL",
]


def _random_text(rng: random.Random) -> str:
    return "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 60)))


def test_random_texts_give_exactly_the_reference_tokens():
    rng = random.Random(19)
    for _ in range(20_000):
        text = _random_text(rng)
        assert list(tokens_of(text)) == list(reference_tokens(text)), repr(text)


def test_random_characters_give_exactly_the_reference_tokens():
    # Single characters only: every boundary between two of them is somewhere a branch may start or stop.
    alphabet = "aZ_0 9.,-'\"`:/hptfsxyé٣\n"
    rng = random.Random(7)
    for _ in range(20_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))
        assert list(tokens_of(text)) == list(reference_tokens(text)), repr(text)


def _step_texts() -> list[str]:
    texts = []
    for path in whowhen_files():
        data = json.loads(path.read_text())
        history = data.get("history") if isinstance(data, dict) else None
        for step in history or []:
            content = step.get("content") if isinstance(step, dict) else None
            if isinstance(content, str):
                texts.append(content)
    return texts


def test_every_whowhen_step_gives_exactly_the_reference_tokens():
    texts = _step_texts()
    if not texts:
        pytest.skip("no Who&When traces beside us")
    different = [i for i, text in enumerate(texts) if list(tokens_of(text)) != list(reference_tokens(text))]
    assert different == [], f"{len(different)} of {len(texts)} steps differ"
