from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from attribution import services
from attribution.methods import MethodError, all_methods
from attribution.models import Verdict
from tracing.management.commands._pure_json import PureJsonMixin
from tracing.models import Trace


class Command(PureJsonMixin, BaseCommand):
    help = (
        "Attribute traces with one method, in this process (no worker needed). Prints one verdict per trace."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--trace", type=int, nargs="+", required=True, metavar="ID")
        parser.add_argument("--method", required=True, choices=[m.name for m in all_methods()])
        parser.add_argument(
            "--model", default="", help="litellm model string; default: the project's setting"
        )
        parser.add_argument(
            "--without-ground-truth", action="store_true", help="hide the task's answer from the method"
        )
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        traces = list(Trace.objects.filter(pk__in=options["trace"]).select_related("project"))
        missing = sorted(set(options["trace"]) - {t.pk for t in traces})
        if missing:
            raise CommandError(f"no such trace: {', '.join(map(str, missing))}")
        verdicts: list[Verdict] = []
        for project in {t.project for t in traces}:
            ids = [t.pk for t in traces if t.project_id == project.pk]
            try:
                run = services.run_create(
                    project=project,
                    method=options["method"],
                    trace_ids=ids,
                    model=options["model"],
                    with_ground_truth=not options["without_ground_truth"],
                    description="command line",
                    enqueue=False,
                )
            except MethodError as exc:
                raise CommandError(str(exc)) from None
            services.run_execute_inline(run=run)
            verdicts.extend(run.verdicts.select_related("trace"))
        rows = [_row(v) for v in sorted(verdicts, key=lambda v: options["trace"].index(v.trace_id))]
        if options["json"]:
            self.stdout.write(json.dumps(rows, indent=2))
        else:
            for r in rows:
                line = (
                    f"trace {r['trace_id']}: {r['agent']} at step {r['step']} (confidence {r['confidence']:.2f})"
                    if r["status"] == "ok"
                    else f"trace {r['trace_id']}: failed: {r['error']}"
                )
                self.stdout.write(line)
        if any(r["status"] != "ok" for r in rows):
            raise CommandError("some traces could not be attributed")


def _row(v: Verdict) -> dict[str, Any]:
    return {
        "trace_id": v.trace_id,
        "method": v.method,
        "status": v.status,
        "agent": v.agent_name,
        "step": v.step_index,
        "confidence": v.confidence or 0.0,
        "category": v.category,
        "reason": v.reason,
        "calls": v.calls,
        "tokens": v.input_tokens + v.output_tokens,
        "cost": float(v.cost),
        "error": v.error,
    }
