"""What attribution adds to tracing's pages through ``tracing.extensions`` (registered in ``AttributionConfig.ready``):

- the trace list's "Latest verdict" column (agent, step and method) and its filters ``has_verdict`` (yes/no) and
  ``verdict_vs_gold`` (differs/agrees), on the page and on ``GET /api/traces``;
- the per-step scores of the trace's newest verdict for the step list's blame strip, read for the shown window only;
- human names for taxonomy category codes.

"Latest verdict" is the trace's newest verdict that produced an answer (status ``ok``): a failed call blames no one.
The gold label it is compared with is the one attribution scores against (as ``selectors.gold_for``: adjudicated, then
annotator, then any other, newest first).
"""

from __future__ import annotations

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
from .taxonomy import human_name

YES_NO = [("", "Any"), ("yes", "Has a verdict"), ("no", "No verdict")]
VS_GOLD = [("", "Any"), ("differs", "Verdict ≠ gold"), ("agrees", "Verdict = gold")]


def _latest_verdicts() -> QuerySet[Verdict]:
    # Served by the verdict_trace_recent index (trace, -created_at): one short index walk per trace of the page.
    return (Verdict.objects.filter(trace=OuterRef("pk"), status=VerdictStatus.OK)
            .order_by("-created_at", "-id"))


def _preferred_gold() -> QuerySet[GoldLabel]:
    """The gold label ``gold_for`` picks, as a subquery: adjudicated, then annotator, then the rest, newest first."""
    rank = Case(When(source="adjudicated", then=Value(0)), When(source="annotator", then=Value(1)),
                default=Value(2), output_field=IntegerField())
    return GoldLabel.objects.filter(trace=OuterRef("pk")).order_by(rank, "-id")


class VerdictColumns:
    columns = (Column(key="verdict", header="Latest verdict"),)

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
            latest, gold = _latest_verdicts(), _preferred_gold()
            traces = traces.annotate(
                v_agent=Subquery(latest.values("agent_name")[:1]), v_step=Subquery(latest.values("step_index")[:1]),
                g_agent=Subquery(gold.values("agent_name")[:1]), g_step=Subquery(gold.values("step_index")[:1]),
            ).filter(latest_verdict_id__isnull=False, g_agent__isnull=False)
            # Spelled out rather than exclude(same): NOT (v_step = g_step) is NULL, not true, for a stepless verdict.
            same = Q(v_agent=F("g_agent"), v_step=F("g_step"))
            differs = Q(v_step__isnull=True) | ~Q(v_agent=F("g_agent")) | ~Q(v_step=F("g_step"))
            traces = traces.filter(same if versus == "agrees" else differs)
        return traces

    def cells(self, traces: list[Trace]) -> dict[int, list[Cell]]:
        """Two queries for the page: its latest verdicts (ids annotated by ``annotate``) and its gold labels."""
        ids = [pk for t in traces if (pk := getattr(t, "latest_verdict_id", None))]
        verdicts = Verdict.objects.only("trace_id", "method", "agent_name", "step_index", "confidence",
                                        "created_at").in_bulk(ids)
        golds: dict[int, list[GoldLabel]] = {}
        for label in GoldLabel.objects.filter(trace_id__in=[v.trace_id for v in verdicts.values()]):
            golds.setdefault(label.trace_id, []).append(label)
        return {v.trace_id: [self._cell(v, golds.get(v.trace_id, []))] for v in verdicts.values()}

    @staticmethod
    def _cell(verdict: Verdict, labels: list[GoldLabel]) -> Cell:
        gold = _pick_gold(labels)
        step = "no step" if verdict.step_index is None else f"step {verdict.step_index}"
        text = f"{verdict.agent_name or 'no agent'} @ {'–' if verdict.step_index is None else verdict.step_index}"
        title = f"{verdict.method} verdict of {verdict.created_at:%Y-%m-%d %H:%M}: {verdict.agent_name} at {step}"
        css = "verdict"
        if gold is not None:
            agrees = gold.agent_name == verdict.agent_name and gold.step_index == verdict.step_index
            css += " agrees" if agrees else " differs"
            title += "; agrees with the gold label" if agrees else (
                f"; the gold label says {gold.agent_name} at step {gold.step_index}")
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
    verdicts = (Verdict.objects.filter(trace=trace, status=VerdictStatus.OK).exclude(scores=[])
                .order_by("-created_at", "-id"))
    if connection.vendor == "postgresql":
        window = RawSQL('jsonb_path_query_array("attribution_verdict"."scores", %s::jsonpath)',
                        [f"$[{int(first)} to {int(last)}]"], output_field=JSONField())
        row = verdicts.annotate(window=window).values("method", "agent_name", "step_index", "created_at",
                                                      "window").first()
        offset = first
    else:
        row = verdicts.values("method", "agent_name", "step_index", "created_at", "scores").first()
        if row:
            row["window"], offset = row["scores"][first:last + 1], first
    if row is None:
        return None
    scores = {offset + i: _unit(s) for i, s in enumerate(row["window"] or [])}
    label = f"{row['method']} verdict of {row['created_at']:%Y-%m-%d %H:%M}"
    return StepScores(label=label, scores=scores, blamed_agent=row["agent_name"], blamed_step=row["step_index"])


def _unit(score: Any) -> float:
    try:
        return min(1.0, max(0.0, float(score)))
    except (TypeError, ValueError):  # a hand-written or foreign verdict: draw nothing rather than fail the page
        return 0.0


def openapi_extend(schema: dict[str, Any]) -> None:
    """Document the two verdict filters on ``GET /api/traces``."""
    operation = schema.get("paths", {}).get("/api/traces", {}).get("get")
    if operation is None:
        return
    params = operation.setdefault("parameters", [])
    known = {p.get("name") for p in params}
    for name, choices, text in (("has_verdict", YES_NO, "Traces with (yes) or without (no) a verdict"),
                                ("verdict_vs_gold", VS_GOLD,
                                 "differs: the latest verdict's agent or step is not the gold label's; agrees: it is")):
        if name not in known:
            params.append({"in": "query", "name": name, "required": False, "description": text,
                           "schema": {"type": "string", "enum": [c for c, _ in choices], "default": ""}})


VERDICT_COLUMNS = VerdictColumns()


def register() -> None:
    extensions.register_trace_list(VERDICT_COLUMNS)
    extensions.register_step_scores(step_scores)
    extensions.register_category_namer(human_name)
