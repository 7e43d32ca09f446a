"""Long texts the trace page shows only the start of (issue 13): a step's content, its raw JSON, the run's final
answer. The page reads the first CULPRIT_STEP_PREVIEW_CHARS characters; the window view (``views.step_content``)
serves the rest, one CULPRIT_STEP_WINDOW_CHARS window at a time, naming the text by ``part`` and step ``index``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django.db.models import Func
from django.db.models.fields.json import KT
from django.db.models.functions import Coalesce

CONTENT, RAW, ANSWER = "content", "raw", "answer"
PARTS = (CONTENT, RAW, ANSWER)


@dataclass
class LongText:
    """The start of a text, and how the window view finds the rest: ``length`` is the whole text's length when it
    is longer than ``text`` (None when ``text`` is all of it)."""

    text: str
    length: int | None
    part: str
    index: int


def pretty_json(raw: Any) -> str:
    """A step's raw record as the Raw JSON toggle shows it; the page and every window cut the same string."""
    return json.dumps(raw, indent=2, ensure_ascii=False, default=str)


def root_output() -> Func:
    """The root span's output (OpenInference ``output.value``), read by the database out of ``raw``."""
    return Coalesce(KT("raw__span_attributes__output.value"), KT("raw__attributes__output.value"))
