"""TRAIL labels: ``X.labels.json`` beside ``X.trace.json`` (patronus-ai's TRAIL benchmark).

The file is ``{"trace_id": ..., "errors": [{category, location, evidence, description, impact}], "scores": [...]}``:
``location`` is the span id the annotators blamed, ``impact`` is HIGH, MEDIUM or LOW, ``scores`` holds the
reliability / security / instruction-adherence / plan-optimality ratings. The labels attach to the trace whose
``external_id`` is ``trace_id``; files without ``trace_id`` use the file name, since TRAIL names both files after the
trace id (``<trace_id>.labels.json`` and ``<trace_id>.trace.json``).

TRAIL lists every error it found; Culprit wants the decisive one. The files do not say which came first in the run,
so the first HIGH-impact error in file order is taken (else the first error at all), and the others are listed as
warnings so a person can still see them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .base import ParsedGold, ParsedLabels, Source, TraceFormatError


class TrailLabels:
    name = "trail-labels"
    label = "TRAIL labels"

    def detect(self, source: Source) -> float:
        head = source.head_text()
        if not head.startswith("{") or '"errors"' not in head or '"location"' not in head:
            return 0.0
        try:
            document = source.json()
        except TraceFormatError:
            return 0.0
        if isinstance(document, dict) and isinstance(document.get("errors"), list):
            errors = [e for e in document["errors"] if isinstance(e, dict)]
            if errors and all("location" in e and "category" in e for e in errors):
                return 0.95 if "scores" in document or "trace_id" in document else 0.8
        return 0.0

    def parse(self, source: Source) -> Iterator[ParsedLabels]:
        yield parse_document(source.json(), file_name=source.name)


def parse_document(document: Any, *, file_name: str) -> ParsedLabels:
    if not isinstance(document, dict) or not isinstance(document.get("errors"), list):
        raise TraceFormatError("a TRAIL label file must be an object with an 'errors' list")
    trace_id = _trace_id(document, file_name)
    errors = [_error(i, e) for i, e in enumerate(document["errors"])]
    if not errors:
        raise TraceFormatError("the 'errors' list is empty: there is no label to import")
    decisive = next((e for e in errors if e["impact"] == "HIGH"), errors[0])
    warnings = [f"also labelled: span {e['location']} ({e['category']}, {e['impact'] or 'no impact given'})"
                for e in errors if e is not decisive]
    gold = ParsedGold(agent="", span_id=decisive["location"], category=decisive["category"],
                      reason=_reason(decisive))
    return ParsedLabels(target_external_id=trace_id, labels=[gold], source_format=TrailLabels.name,
                        warnings=warnings)


def _trace_id(document: dict[str, Any], file_name: str) -> str:
    if isinstance(document.get("trace_id"), str) and document["trace_id"].strip():
        return document["trace_id"].strip()
    stem = file_name.replace("\\", "/").rsplit("/", 1)[-1]
    for suffix in (".labels.json", ".json"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    if not stem:
        raise TraceFormatError("the label file has no 'trace_id' and its name does not give one")
    return stem


def _error(index: int, error: Any) -> dict[str, str]:
    if not isinstance(error, dict):
        raise TraceFormatError(f"errors[{index}] is not an object")
    location = error.get("location")
    if not isinstance(location, str) or not location.strip():
        raise TraceFormatError(f"errors[{index}] has no 'location' (the span id of the error)")
    impact = str(error.get("impact") or "").strip().upper()
    return {"location": location.strip(), "category": _text(error.get("category")), "impact": impact,
            "description": _text(error.get("description")), "evidence": _text(error.get("evidence"))}


def _reason(error: dict[str, str]) -> str:
    parts = [error["description"]]
    if error["evidence"]:
        parts.append(f"Evidence: {error['evidence']}")
    if error["impact"]:
        parts.append(f"Impact: {error['impact']}")
    return "\n\n".join(p for p in parts if p)


def _text(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else str(value)


FORMAT = TrailLabels()
