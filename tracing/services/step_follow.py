"""Rows that point at a step by index follow it when an incremental OTLP build renumbers the trace's steps.

Found by convention (a ``step_index`` field and a foreign key to Trace, else one hop away), so tracing imports no
other app: gold and error labels, verdicts, annotations, schema cases... Verdicts' per-step scores follow through the
``steps_moved`` extension hook (``tracing.extensions``), which attribution registers.
"""

from __future__ import annotations

from django.apps import apps
from django.db import models

from ..models import Trace


def _step_index_models() -> list[tuple[type[models.Model], str]]:
    """Every model holding a ``step_index`` of a trace, with the lookup from it to the trace: found by convention
    (a ``step_index`` field and a foreign key to Trace, else one hop away), so tracing imports no other app."""
    found = []
    for model in apps.get_models():
        if "step_index" not in {f.name for f in model._meta.get_fields()}:
            continue
        keys = [f for f in model._meta.get_fields() if f.many_to_one and f.concrete]
        direct = next((f.name for f in keys if f.related_model is Trace), None)
        if direct:
            found.append((model, direct))
            continue
        for fk in keys:
            hop = next(
                (
                    f.name
                    for f in fk.related_model._meta.get_fields()
                    if f.many_to_one and f.concrete and f.related_model is Trace
                ),
                None,
            )
            if hop:
                found.append((model, f"{fk.name}__{hop}"))
                break
    return found


def _labels_follow(trace: Trace, mapping: dict[int, int]) -> None:
    """Rows that point at a step by index (gold and error labels, verdicts, annotations, schema cases...) move with
    it. One query finds them in every table (most traces have none); there are few labels per trace."""
    if not mapping:
        return
    low = min(mapping)
    found = _step_index_models()
    queries = [
        model._default_manager.filter(**{lookup: trace, "step_index__gte": low})
        .order_by()
        .annotate(table=models.Value(i))
        .values_list("table", "pk", "step_index")
        for i, (model, lookup) in enumerate(found)
    ]
    rows = list(queries[0].union(*queries[1:], all=True)) if queries else []
    for i, (model, _) in enumerate(found):
        changed = [
            model(pk=pk, step_index=mapping[index])
            for table, pk, index in rows
            if table == i and index in mapping
        ]
        if changed:
            model._default_manager.bulk_update(changed, ["step_index"])
