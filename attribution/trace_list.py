"""What attribution adds to tracing's pages through ``tracing.extensions`` (registered in ``AttributionConfig.ready``):

- the trace list's "Latest verdict" column (agent, step and method), sortable (``ordering=verdict``: by agent, then
  step, then method; traces without a verdict last), and its filters ``has_verdict`` (yes/no) and ``verdict_vs_gold``
  (differs/agrees), on the page and on ``GET /api/traces``, whose items carry the verdict as ``verdict``;
- the per-step scores of the trace's newest verdict for the step list's blame strip, read for the shown window only;
- human names for label categories: taxonomy codes, and the datasets' own wording (TRAIL's "Tool-related", MAST's
  "1.1 Disobey task specification").

"Latest verdict" is the trace's newest verdict that produced an answer (status ``ok``): a failed call blames no one.
The gold label it is compared with is the one attribution scores against (as ``selectors.gold_for``: adjudicated, then
annotator, then any other, newest first).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any

from django import forms
from django.db import connection
from django.db.models import (
    Case,
    Exists,
    F,
    IntegerField,
    JSONField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.expressions import RawSQL
from django.urls import reverse

from tracing import extensions
from tracing.extensions import Cell, Column, StepScores
from tracing.models import GoldLabel, Trace

from .models import Verdict, VerdictStatus
from .taxonomy import CATEGORIES, human_name

YES_NO = [("", "Any"), ("yes", "Has a verdict"), ("no", "No verdict")]
VS_GOLD = [("", "Any"), ("differs", "Verdict ≠ gold"), ("agrees", "Verdict = gold")]


def _latest_verdicts() -> QuerySet[Verdict]:
    # Served by the verdict_trace_recent index (trace, -created_at): one short index walk per trace of the page.
    return Verdict.objects.filter(trace=OuterRef("pk"), status=VerdictStatus.OK).order_by(
        "-created_at", "-id"
    )


def _preferred_gold(trace: str = "pk") -> QuerySet[GoldLabel]:
    """The gold label ``gold_for`` picks, as a subquery (of the outer query's ``trace`` column): adjudicated, then
    annotator, then the rest, newest first."""
    rank = Case(
        When(source="adjudicated", then=Value(0)),
        When(source="annotator", then=Value(1)),
        default=Value(2),
        output_field=IntegerField(),
    )
    return GoldLabel.objects.filter(trace=OuterRef(trace)).order_by(rank, "-id")


# The annotations the verdict sort and the verdict-vs-gold filter read: each one short index walk per trace.
_LATEST = {"v_agent": "agent_name", "v_step": "step_index", "v_method": "method"}


def _with_latest(traces: QuerySet[Trace], *names: str) -> QuerySet[Trace]:
    """``traces`` annotated with the latest verdict's ``names`` (of ``_LATEST``), each once."""
    missing = {
        n: Subquery(_latest_verdicts().values(_LATEST[n])[:1])
        for n in names
        if n not in traces.query.annotations
    }
    return traces.annotate(**missing) if missing else traces


class VerdictColumns:
    columns = (Column(key="verdict", header="Latest verdict", sort_key="verdict"),)
    orderings = ("verdict",)

    def filter_fields(self) -> dict[str, forms.Field]:
        return {
            "has_verdict": forms.ChoiceField(required=False, label="Verdict", choices=YES_NO),
            "verdict_vs_gold": forms.ChoiceField(required=False, label="Verdict vs gold", choices=VS_GOLD),
        }

    def annotate(self, traces: QuerySet[Trace], params: Mapping[str, Any]) -> QuerySet[Trace]:
        traces = traces.annotate(latest_verdict_id=Subquery(_latest_verdicts().values("id")[:1]))
        has = params.get("has_verdict")
        if has == "yes":
            traces = traces.filter(Exists(_latest_verdicts()))
        elif has == "no":
            traces = traces.filter(~Exists(_latest_verdicts()))
        versus = params.get("verdict_vs_gold")
        if versus in ("differs", "agrees"):
            gold = _preferred_gold()
            traces = (
                _with_latest(traces, "v_agent", "v_step")
                .annotate(
                    g_agent=Subquery(gold.values("agent_name")[:1]),
                    g_step=Subquery(gold.values("step_index")[:1]),
                )
                .filter(latest_verdict_id__isnull=False, g_agent__isnull=False)
            )
            # Spelled out rather than exclude(same): NOT (v_step = g_step) is NULL, not true, for a stepless verdict.
            same = Q(v_agent=F("g_agent"), v_step=F("g_step"))
            differs = Q(v_step__isnull=True) | ~Q(v_agent=F("g_agent")) | ~Q(v_step=F("g_step"))
            traces = traces.filter(same if versus == "agrees" else differs)
        return traces

    def order_by(self, traces: QuerySet[Trace], key: str) -> tuple[QuerySet[Trace], list[str]]:
        """By the blamed agent, then step, then method: traces blaming the same agent sit together, in run order.
        Traces without an answered verdict have NULLs here, which tracing sorts last either way."""
        return _with_latest(traces, *_LATEST), list(_LATEST)

    def api_fields(self, traces: list[Trace]) -> dict[int, dict[str, Any]]:
        """``verdict`` of each item: the latest answered verdict, with ``correct`` (agent and step both the preferred
        gold label's; null without a gold label), or null. One query for the page: the gold label is a subquery."""
        ids = [pk for t in traces if (pk := getattr(t, "latest_verdict_id", None))]
        fields: dict[int, dict[str, Any]] = {t.pk: {"verdict": None} for t in traces}
        if not ids:
            return fields
        gold = _preferred_gold("trace_id")
        rows = (
            Verdict.objects.filter(pk__in=ids)
            .annotate(
                g_agent=Subquery(gold.values("agent_name")[:1]),
                g_step=Subquery(gold.values("step_index")[:1]),
            )
            .values(
                "trace_id",
                "run_id",
                "method",
                "agent_name",
                "step_index",
                "confidence",
                "created_at",
                "g_agent",
                "g_step",
            )
        )
        for row in rows:
            correct = (
                None
                if row["g_agent"] is None
                else (row["g_agent"] == row["agent_name"] and row["g_step"] == row["step_index"])
            )
            fields[row["trace_id"]] = {
                "verdict": {
                    "agent": row["agent_name"],
                    "step": row["step_index"],
                    "method": row["method"],
                    "run": row["run_id"],
                    "confidence": row["confidence"],
                    "created_at": row["created_at"],
                    "correct": correct,
                }
            }
        return fields

    def cells(self, traces: list[Trace]) -> dict[int, list[Cell]]:
        """Two queries for the page: its latest verdicts (ids annotated by ``annotate``) and its gold labels."""
        ids = [pk for t in traces if (pk := getattr(t, "latest_verdict_id", None))]
        verdicts = Verdict.objects.only(
            "trace_id", "method", "agent_name", "step_index", "confidence", "created_at"
        ).in_bulk(ids)
        golds: dict[int, list[GoldLabel]] = {}
        for label in GoldLabel.objects.filter(trace_id__in=[v.trace_id for v in verdicts.values()]):
            golds.setdefault(label.trace_id, []).append(label)
        return {v.trace_id: [self._cell(v, golds.get(v.trace_id, []))] for v in verdicts.values()}

    @staticmethod
    def _cell(verdict: Verdict, labels: list[GoldLabel]) -> Cell:
        gold = _pick_gold(labels)
        step = "no step" if verdict.step_index is None else f"step {verdict.step_index}"
        text = f"{verdict.agent_name or 'no agent'} @ {'–' if verdict.step_index is None else verdict.step_index}"
        title = (
            f"{verdict.method} verdict of {verdict.created_at:%Y-%m-%d %H:%M}: {verdict.agent_name} at {step}"
        )
        css = "verdict"
        if gold is not None:
            agrees = gold.agent_name == verdict.agent_name and gold.step_index == verdict.step_index
            css += " agrees" if agrees else " differs"
            title += (
                "; agrees with the gold label"
                if agrees
                else (f"; the gold label says {gold.agent_name} at step {gold.step_index}")
            )
        href = reverse("tracing:trace_detail", args=[verdict.trace_id])
        if verdict.step_index is not None:
            href += f"?step={verdict.step_index}#step-{verdict.step_index}"
        return Cell(text=text, title=title, css=css, href=href, tag=verdict.method)


def _pick_gold(labels: list[GoldLabel]) -> GoldLabel | None:
    """``selectors.gold_for`` over labels already fetched for the whole page (same order as ``_preferred_gold``)."""
    order = {"adjudicated": 0, "annotator": 1}
    return min(labels, key=lambda g: (order.get(g.source, 2), -g.pk), default=None)


def step_scores(trace: Trace, first: int, last: int) -> StepScores | None:
    """The newest answered verdict's scores for steps ``first``..``last``. On PostgreSQL only the window's slice of
    the scores list leaves the database (a verdict of a 100,000-step trace stores 100,000 numbers)."""
    verdicts = (
        Verdict.objects.filter(trace=trace, status=VerdictStatus.OK)
        .exclude(scores=[])
        .order_by("-created_at", "-id")
    )
    if connection.vendor == "postgresql":
        window = RawSQL(
            'jsonb_path_query_array("attribution_verdict"."scores", %s::jsonpath)',
            [f"$[{int(first)} to {int(last)}]"],
            output_field=JSONField(),
        )
        row = (
            verdicts.annotate(window=window)
            .values("method", "agent_name", "step_index", "created_at", "window")
            .first()
        )
        offset = first
    else:
        row = verdicts.values("method", "agent_name", "step_index", "created_at", "scores").first()
        if row:
            row["window"], offset = row["scores"][first : last + 1], first
    if row is None:
        return None
    scores = {offset + i: _unit(s) for i, s in enumerate(row["window"] or [])}
    label = f"{row['method']} verdict of {row['created_at']:%Y-%m-%d %H:%M}"
    return StepScores(
        label=label, scores=scores, blamed_agent=row["agent_name"], blamed_step=row["step_index"]
    )


def _unit(score: Any) -> float:
    try:
        return min(1.0, max(0.0, float(score)))
    except (
        TypeError,
        ValueError,
    ):  # a hand-written or foreign verdict: draw nothing rather than fail the page
        return 0.0


def _nullable(kind: str, **extra: Any) -> dict[str, Any]:
    return {"anyOf": [{"type": kind, **extra}, {"type": "null"}]}


VERDICT_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {
            "type": "object",
            "title": "LatestVerdict",
            "properties": {
                "agent": {
                    "type": "string",
                    "description": "the blamed agent; empty when the verdict names none",
                },
                "step": _nullable("integer", description="the blamed step's index"),
                "method": {"type": "string", "description": "the attribution method that gave the verdict"},
                "run": {"type": "integer", "description": "id of the attribution run the verdict belongs to"},
                "confidence": _nullable("number"),
                "created_at": {"type": "string", "format": "date-time"},
                "correct": _nullable(
                    "boolean", description="agent and step are the gold label's; null: no gold label"
                ),
            },
            "required": ["agent", "step", "method", "run", "confidence", "created_at", "correct"],
        },
        {"type": "null"},
    ],
    "description": "the trace's latest answered verdict; null when it has none",
}


def _trace_item_schema(schema: dict[str, Any], operation: dict[str, Any]) -> dict[str, Any] | None:
    """The component of one ``GET /api/traces`` item, found by following the 200 answer's references (so it does
    not depend on what tracing names its schemas)."""
    components = schema.get("components", {}).get("schemas", {})

    def resolve(node: dict[str, Any] | None) -> dict[str, Any] | None:
        ref = (node or {}).get("$ref", "")
        return components.get(ref.rsplit("/", 1)[-1]) if ref else node

    body = operation.get("responses", {}).get(200) or operation.get("responses", {}).get("200") or {}
    page = resolve(body.get("content", {}).get("application/json", {}).get("schema"))
    return resolve(((page or {}).get("properties", {}).get("items") or {}).get("items"))


def openapi_extend(schema: dict[str, Any]) -> None:
    """Document the verdict filters and sort key on ``GET /api/traces``, and the ``verdict`` of its items."""
    operation = schema.get("paths", {}).get("/api/traces", {}).get("get")
    if operation is None:
        return
    params = operation.setdefault("parameters", [])
    known = {p.get("name") for p in params}
    for name, choices, text in (
        ("has_verdict", YES_NO, "Traces with (yes) or without (no) a verdict"),
        (
            "verdict_vs_gold",
            VS_GOLD,
            "differs: the latest verdict's agent or step is not the gold label's; agrees: it is",
        ),
    ):
        if name not in known:
            params.append(
                {
                    "in": "query",
                    "name": name,
                    "required": False,
                    "description": text,
                    "schema": {"type": "string", "enum": [c for c, _ in choices], "default": ""},
                }
            )
    for param in params:
        if param.get("name") == "ordering" and "verdict" not in param.get("description", ""):
            param["description"] = (
                param.get("description", "") + " Also verdict / -verdict: the latest verdict's "
                "agent, then step, then method; traces without one last."
            ).strip()
    item = _trace_item_schema(schema, operation)
    if item is not None:
        item.setdefault("properties", {})["verdict"] = VERDICT_SCHEMA
        required = item.setdefault("required", [])
        if "verdict" not in required:
            required.append("verdict")


# TRAIL's label files spell their categories loosely ("Formatting Error", "Language-Only", "Instruction non
# complience", " Incorrect Problem Identification"): the 379 errors of the TRAIL files in /work/shared spell 17 of its
# categories 25 ways, plus "Incorrect Memory Usage", which the taxonomy lacks. At this ratio each of the 25 joins its
# own category and "Incorrect Memory Usage" none (it reads as written).
_TRAIL_CUTOFF = 0.8
_TRAIL_SLUGS = {code.removeprefix("trail."): code for code, c in CATEGORIES.items() if c.family == "trail"}
_MAST_CODE = re.compile(r"^\s*(?:mast[\s.]*)?([123])\.(\d{1,2})(?!\d)", re.IGNORECASE)


def _slug(text: str) -> str:
    return "_".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def _trail_code(category: str, *, loose: bool) -> str | None:
    slug = _slug(category)
    if not slug:
        return None
    if slug in _TRAIL_SLUGS:
        return _TRAIL_SLUGS[slug]
    if not loose:
        return None
    prefixed = [code for key, code in _TRAIL_SLUGS.items() if key.startswith(slug + "_")]  # "Tool Selection"
    if len(prefixed) == 1:
        return prefixed[0]
    close = difflib.get_close_matches(slug, list(_TRAIL_SLUGS), n=1, cutoff=_TRAIL_CUTOFF)
    return _TRAIL_SLUGS[close[0]] if close else None


def category_name(category: str, family: str = "") -> str:
    """A person's name for a label's category: a taxonomy code, or a dataset's wording read in its family (TRAIL's
    "Tool-related" -> "Hallucinated a tool call or its result (TRAIL: Tool-related)"; MAST's "1.1 Disobey task
    specification" -> its MAST name). A category no taxonomy knows reads as written, after its family."""
    text = category.strip()
    if text in CATEGORIES:
        return CATEGORIES[text].name
    kind = family.strip().lower()
    code = _trail_code(text, loose=kind == "trail") if kind in ("trail", "") else None
    if code is None and kind in ("mast", "") and (match := _MAST_CODE.match(text)):
        code = f"mast.{match[1]}.{match[2]}" if f"mast.{match[1]}.{match[2]}" in CATEGORIES else None
    if code is not None:
        return CATEGORIES[code].name
    if "." in text and " " not in text:  # an unknown code ("tool.bad_call") still reads as words
        return human_name(text)
    return f"{family.strip()}: {category}" if family.strip() else category


VERDICT_COLUMNS = VerdictColumns()


def register() -> None:
    extensions.register_trace_list(VERDICT_COLUMNS)
    extensions.register_step_scores(step_scores)
    extensions.register_category_namer(category_name)
