from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from attribution import selectors, services
from attribution.evaluation import score
from attribution.methods import MethodError, all_methods
from attribution.selectors import evaluation_records, labelled_traces
from tracing.models import Project


class Command(BaseCommand):
    help = ("Score a method against the gold labels of a project's traces, beside random and majority baselines. "
            "Runs the method in this process.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True)
        parser.add_argument("--method", required=True, choices=[m.name for m in all_methods()])
        parser.add_argument("--model", default="")
        parser.add_argument("--without-ground-truth", action="store_true")
        parser.add_argument("--split", choices=["all", "dev", "heldout"], default="all",
                            help="dev: the part methods may be tuned on; heldout: the part kept back")
        parser.add_argument("--json", action="store_true")
        parser.add_argument("--reuse", action="store_true",
                            help="score the newest finished run over the same traces instead of running again")
        parser.add_argument("--compare", default="",
                            help="also score this method on the same traces (schema_guided compares with heuristic "
                                 "unless told otherwise; 'none' to skip)")

    def handle(self, *args: Any, **options: Any) -> None:
        project = Project.objects.filter(name=options["project"]).first()
        if project is None:
            raise CommandError(f"no project called {options['project']!r}")
        traces = labelled_traces(project=project, split=options["split"])
        if not traces:
            raise CommandError("no trace with a gold label in this project (and split)")
        compare = options["compare"] or ("heuristic" if options["method"] == "schema_guided" else "none")
        if options["method"] == "schema_guided" or compare == "schema_guided":
            # The cache learns from every verified case first; each trace is then attributed without its own
            # cases (leave-one-out, inside the method's schema source).
            from attribution.schemas.services import schemas_distill

            schemas_distill(project=project)
        results = [self._evaluate(project, options["method"], traces, options)]
        if compare not in ("none", options["method"]):
            results.append(self._evaluate(project, compare, traces, options))
        if options["json"]:
            self.stdout.write(json.dumps(results[0] | ({"compared": results[1]} if len(results) > 1 else {}),
                                         indent=2))
        else:
            self.stdout.write("\n\n".join(format_table(r) for r in results))

    def _evaluate(self, project: Project, method: str, traces: list, options: dict[str, Any]) -> dict[str, Any]:
        with_truth = not options["without_ground_truth"]
        ids = [t.pk for t in traces]
        run = selectors.reusable_run(project=project, method=method, trace_ids=ids,
                                     with_ground_truth=with_truth) if options["reuse"] else None
        try:
            run = run or services.run_create(project=project, method=method, trace_ids=ids, model=options["model"],
                                             with_ground_truth=with_truth,
                                             description=f"evaluate ({options['split']})", enqueue=False)
        except MethodError as exc:
            raise CommandError(str(exc)) from None
        run = services.run_execute_inline(run=run)
        return {"project": project.name, "method": run.method, "model": run.model, "split": options["split"],
                "with_ground_truth": with_truth, "run_id": run.pk, "failed": run.failed,
                **score(evaluation_records(run=run))}


def format_table(r: dict[str, Any]) -> str:
    pct = lambda x: f"{100 * x:5.1f}%"  # noqa: E731
    b = r["baselines"]
    lines = [
        f"{r['method']} on {r['project']} ({r['split']}, n={r['n']}, {'with' if r['with_ground_truth'] else 'without'}"
        f" ground truth{', ' + str(r['failed']) + ' failed' if r['failed'] else ''})",
        f"{'':24}{'agent':>8}{'step':>8}{'joint':>8}{'step±1':>8}{'step±3':>8}{'step±5':>8}",
        f"{r['method']:24}{pct(r['agent_accuracy']):>8}{pct(r['step_accuracy']):>8}{pct(r['joint_accuracy']):>8}"
        + "".join(f"{pct(r['step_accuracy_within'][k]):>8}" for k in ("1", "3", "5")),
        f"{'random baseline':24}{pct(b['random']['agent']):>8}{pct(b['random']['step']):>8}",
        f"{'majority baseline':24}{pct(b['majority']['agent']):>8}{pct(b['majority']['step']):>8}",
        f"Who&When scorer-compatible (substring rule): agent {pct(r['scorer_compatible']['agent'])}, "
        f"step {pct(r['scorer_compatible']['step'])}",
        f"per trace: {r['calls']:.1f} calls, {r['tokens']:.0f} tokens, ${r['cost']:.4f}",
    ]
    return "\n".join(lines)
