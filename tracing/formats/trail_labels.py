"""TRAIL labels: ``X.labels.json`` beside ``X.trace.json`` (patronus-ai's TRAIL benchmark).

The file is ``{"trace_id": ..., "errors": [{category, location, evidence, description, impact}], "scores": [...]}``:
``location`` is the span id the annotators blamed, ``impact`` is HIGH, MEDIUM or LOW, ``scores`` holds the
reliability / security / instruction-adherence / plan-optimality ratings. The labels attach to the trace whose
``external_id`` is ``trace_id``; files without ``trace_id`` use the file name, since TRAIL names both files after the
trace id (``<trace_id>.labels.json`` and ``<trace_id>.trace.json``).

TRAIL lists every error it found, and every one is kept (an ``ErrorLabel`` each, family "TRAIL"). The decisive one,
which becomes the gold label attribution is scored against, is the earliest HIGH-impact error in run order, else
the earliest error at all; the files list errors in no particular order, so the writer decides once the spans are
resolved to steps (``services.labels.decisive_index``). A file with an empty ``errors`` list is a run the
annotators read and found clean: it labels nothing and marks the trace ``metadata["labelled_errors"] = 0``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .base import ParsedGold, ParsedLabels, Source, TraceFormatError, scrub_nul

FAMILY = "TRAIL"


class TrailLabels:
    name = "trail-labels"
    label = "TRAIL labels"

    def detect(self, source: Source) -> float:
        head = source.head_text()
        if not head.startswith("{") or '"errors"' not in head:
            return 0.0
        try:
            document = source.json()
        except TraceFormatError:
            return 0.0
        if isinstance(document, dict) and isinstance(document.get("errors"), list):
            errors = [e for e in document["errors"] if isinstance(e, dict)]
            if errors and all("location" in e and "category" in e for e in errors):
                return 0.95 if "scores" in document or "trace_id" in document else 0.8
            if not document["errors"] and "scores" in document and "trace_id" in document:
                return 0.9  # annotated and found clean: TRAIL writes an empty list (4 of 133 files)
        return 0.0

    def parse(self, source: Source) -> Iterator[ParsedLabels]:
        yield parse_document(source.json(), file_name=source.name)


def parse_document(document: Any, *, file_name: str) -> ParsedLabels:
    if not isinstance(document, dict) or not isinstance(document.get("errors"), list):
        raise TraceFormatError("a TRAIL label file must be an object with an 'errors' list")
    trace_id = _trace_id(document, file_name)
    nuls = _count_nuls(document["errors"])
    errors = [_error(i, e) for i, e in enumerate(scrub_nul(document["errors"]))]
    metadata: dict[str, Any] = {"labelled_errors": len(errors), "label_source": TrailLabels.name}
    if isinstance(document.get("scores"), list):
        metadata["trail_scores"] = scrub_nul(document["scores"])
    warnings = [f"replaced {nuls} NUL character(s) in the label text with U+FFFD"] if nuls else []
    if not errors:
        # The annotators read the run and found nothing wrong: the trace is marked, not left "unlabelled".
        return ParsedLabels(
            target_external_id=trace_id,
            labels=[],
            source_format=TrailLabels.name,
            warnings=[*warnings, "the TRAIL annotators found no error in this run"],
            metadata=metadata,
        )
    labels = [
        ParsedGold(
            span_id=e["location"],
            category=e["category"],
            reason=e["description"],
            evidence=e["evidence"],
            impact=e["impact"],
            family=FAMILY,
            decisive=False,
        )
        for e in errors
    ]
    return ParsedLabels(
        target_external_id=trace_id,
        labels=labels,
        source_format=TrailLabels.name,
        warnings=warnings,
        metadata=metadata,
    )


def _count_nuls(value: Any) -> int:
    if isinstance(value, str):
        return value.count("\x00")
    if isinstance(value, dict):
        return sum(_count_nuls(k) + _count_nuls(v) for k, v in value.items())
    if isinstance(value, list):
        return sum(_count_nuls(v) for v in value)
    return 0


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
    return {
        "location": location.strip(),
        "category": _text(error.get("category")),
        "impact": impact,
        "description": _text(error.get("description")),
        "evidence": _text(error.get("evidence")),
    }


def _text(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else str(value)


FORMAT = TrailLabels()
