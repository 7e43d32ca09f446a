"""What every exporter shares: streaming a case's steps out of the database, and the two shapes rows take.

Steps are never loaded per trace or per dataset: each case's steps come from one server-side cursor
(``.iterator(chunk_size=STEP_CHUNK)``) and are written out as they arrive, so a 100,000-step export holds one chunk
of steps at a time (``bench/export_speed.py`` measures rows/s and peak RSS). Case headers (a few small fields per
trace) are the only thing held for the whole export.

Shapes:
- a Who&When document per case, written piece by piece (the history list is streamed, never built as a list);
- a flat row per label (``LABEL_COLUMNS``) for Parquet and CSV: every labelled error of a case, or its gold label
  when it has none, with the case's fields repeated on each row (a handful of rows per case; no step is streamed).

Every labelled error of a case (``ErrorLabel``: TRAIL lists several per run) rides along: Who&When documents carry
them as an ``errors`` list beside ``mistake_*`` (which stays the decisive one), and Parquet/CSV give each one a row
with a ``decisive`` column.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

from tracing.models import Agent, ErrorLabel, Step

from ..selectors import ExportCase

# Steps per round trip of the server-side cursor: 2,000 Who&When-sized steps (~1 KB of text each) are ~2 MB in
# Python. bench/export_speed.py: peak RSS of the export command is the same (~125 MB, mostly Django itself) for
# 10,000 and 100,000 steps, and for 100 traces of 1,000 steps as for one trace of 100,000.
STEP_CHUNK = 2000

Progress = Callable[[int], None]  # told how many more steps were written

# The Who&When header fields kept in a trace's metadata by the importer, written back under their own names.
_WHOWHEN_METADATA_KEYS = ("question_ID", "level", "is_correct", "is_corrected")


def iter_steps(case: ExportCase, *, with_raw: bool = False) -> Iterator[tuple[Any, ...]]:
    """(index, speaker, agent name, kind, content[, raw]) of each step, in order, streamed."""
    fields = ["index", "speaker", "agent__name", "kind", "content"] + (["raw"] if with_raw else [])
    return (
        Step.objects.filter(trace_id=case.trace_id)
        .order_by("index")
        .values_list(*fields)
        .iterator(chunk_size=STEP_CHUNK)
    )


def system_prompts(case: ExportCase) -> dict[str, str]:
    rows = (
        Agent.objects.filter(trace_id=case.trace_id)
        .exclude(system_prompt="")
        .order_by("position", "id")
        .values_list("name", "system_prompt")
    )
    return dict(rows)


def error_labels(case: ExportCase) -> list[dict[str, Any]]:
    """The case's labelled errors in file order, as the Who&When reader reads them back (``errors``)."""
    rows = ErrorLabel.objects.filter(trace_id=case.trace_id).order_by("position", "id")
    return [
        {
            "step": e.step_index,
            "span_id": e.span_id,
            "agent": e.agent_name,
            "family": e.family,
            "category": e.category,
            "impact": e.impact,
            "description": e.description,
            "evidence": e.evidence,
            "decisive": e.decisive,
        }
        for e in rows
    ]


# --- Who&When documents ----------------------------------------------------------------------------------------


def whowhen_message(case: ExportCase, step: tuple[Any, ...]) -> dict[str, Any]:
    """The history item for a step. A step imported from Who&When kept its message minus the content in ``raw``
    (role, name, …), so the message is rebuilt exactly; any other step is written as ``{"role": speaker}``, which
    the Who&When reader turns back into the same speaker string."""
    _index, speaker, _agent, _kind, content, raw = step
    if case.source_format == "whowhen" and isinstance(raw, dict):
        message = {k: v for k, v in raw.items() if k != "content"}
    else:
        message = {"role": speaker}
    message["content"] = content
    return message


def whowhen_header(case: ExportCase, *, with_name: bool) -> dict[str, Any]:
    header: dict[str, Any] = {"trace_name": case.name} if with_name else {}
    header |= {"question": case.question, "ground_truth": case.ground_truth}
    for key in _WHOWHEN_METADATA_KEYS:
        if key in case.metadata:
            header[key] = case.metadata[key]
    if "question_ID" not in header and case.external_id:
        header["question_ID"] = case.external_id
    if "is_correct" not in header and case.outcome == "succeeded":
        header["is_correct"] = True  # the reader's only way to tell a succeeded run
    return header


def whowhen_footer(case: ExportCase) -> dict[str, Any]:
    label = case.label
    footer: dict[str, Any] = {
        "mistake_agent": label.agent_name,
        "mistake_step": str(label.step_index),
        "mistake_reason": label.reason,
    }
    if label.category:
        footer["mistake_type"] = label.category
    if prompts := system_prompts(case):
        footer["system_prompt"] = prompts
    if errors := error_labels(case):
        footer["errors"] = errors
    # Culprit's own provenance; Who&When readers ignore unknown keys.
    footer["culprit"] = {
        "split": case.split,
        "label_source": label.source,
        "source_format": case.source_format,
        "trace_name": case.name,
    }
    return footer


def write_whowhen_document(out: TextIO, case: ExportCase, *, with_name: bool, progress: Progress) -> int:
    """Write one case as one Who&When JSON object on one line (no newline inside), streaming its history."""
    out.write("{")
    _write_members(out, whowhen_header(case, with_name=with_name))
    out.write(', "history": [')
    written = 0
    for step in iter_steps(case, with_raw=True):
        out.write((", " if written else "") + _dumps(whowhen_message(case, step)))
        written += 1
        if written % STEP_CHUNK == 0:
            progress(STEP_CHUNK)
    progress(written % STEP_CHUNK)
    out.write("], ")
    _write_members(out, whowhen_footer(case))
    out.write("}")
    return written


def _write_members(out: TextIO, members: dict[str, Any]) -> None:
    out.write(", ".join(f"{_dumps(key)}: {_dumps(value)}" for key, value in members.items()))


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


# --- flat label rows ------------------------------------------------------------------------------------------

LABEL_COLUMNS = (
    "split",
    "trace_name",
    "trace_external_id",
    "question",
    "ground_truth",
    "label_position",
    "decisive",
    "label_source",
    "family",
    "category",
    "step_index",
    "span_id",
    "agent",
    "impact",
    "description",
    "evidence",
    "step_speaker",
    "step_content",
    "mistake_agent",
    "mistake_step",
    "mistake_category",
)


def label_rows(cases: Iterable[ExportCase], progress: Progress) -> Iterator[tuple[Any, ...]]:
    """One tuple per label, in ``LABEL_COLUMNS`` order, case after case: every labelled error of the case
    (``ErrorLabel``, file order; unplaced and trace-level ones too, with an empty step), or, for a case without any,
    one row for its exported gold label. The case's fields and its exported label (``mistake_*``) repeat on each row;
    ``step_speaker``/``step_content`` are those of the labelled step. Progress counts the cases' steps, as the
    step-streaming formats do, so an export's progress bar means the same in every format."""
    for case in cases:
        head = (case.split, case.name, case.external_id, case.question, case.ground_truth)
        label = case.label
        tail = (label.agent_name, label.step_index, label.category)
        labels = _case_labels(case)
        steps = dict(
            (i, (speaker, content))
            for i, speaker, content in Step.objects.filter(
                trace_id=case.trace_id, index__in={r[5] for r in labels if r[5] is not None}
            ).values_list("index", "speaker", "content")
        )
        for row in labels:
            yield head + row + steps.get(row[5], ("", "")) + tail
        progress(case.step_count)


def _case_labels(case: ExportCase) -> list[tuple[Any, ...]]:
    """(position, decisive, source, family, category, step, span id, agent, impact, description, evidence) per
    label of the case."""
    rows = [
        (
            e.position,
            e.decisive,
            e.source,
            e.family,
            e.category,
            e.step_index,
            e.span_id,
            e.agent_name,
            e.impact,
            e.description,
            e.evidence,
        )
        for e in ErrorLabel.objects.filter(trace_id=case.trace_id).order_by("position", "id")
    ]
    if rows:
        return rows
    label = case.label
    return [
        (
            0,
            True,
            label.source,
            "",
            label.category,
            label.step_index,
            "",
            label.agent_name,
            "",
            label.reason,
            "",
        )
    ]
