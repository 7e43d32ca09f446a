from __future__ import annotations

import argparse
import json
import os
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from attribution import selectors, services
from attribution.evaluation import score
from attribution.methods import MethodError, all_methods
from attribution.models import AttributorModel
from attribution.selectors import evaluation_records, labelled_trace_ids
from tracing.management.commands._pure_json import PureJsonMixin
from tracing.models import Project


class Command(PureJsonMixin, BaseCommand):
    help = (
        "Score a method against the gold labels of a project's traces, beside baselines fitted on training data "
        "only, every figure with a Wilson 95% interval. Runs the method in this process. --cv K: K-fold "
        "cross-validation grouped by trace for the methods that learn (learned, heuristic); --model NAME with "
        "--method learned: apply a model trained elsewhere (transfer)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True)
        parser.add_argument("--method", required=True, choices=[m.name for m in all_methods()])
        parser.add_argument(
            "--model",
            default="",
            help="the LLM for LLM methods; for --method learned, a trained model's NAME (or NAME:vN)",
        )
        parser.add_argument(
            "--cv",
            type=_folds,
            default=0,
            metavar="K",
            help="K-fold cross-validation within the project, grouped by trace (learned, heuristic)",
        )
        parser.add_argument("--without-ground-truth", action="store_true")
        parser.add_argument(
            "--split",
            choices=["all", "dev", "heldout"],
            default="all",
            help="dev: the part methods may be tuned on; heldout: the part kept back",
        )
        parser.add_argument("--json", action="store_true")

        def jobs(value: str) -> int:  # 0: the default; more than 64 processes is a typo, not a plan
            from argparse import ArgumentTypeError

            try:
                number = int(value)
            except ValueError:
                raise ArgumentTypeError(f"{value!r} is not a whole number") from None
            if not 0 <= number <= 64:
                raise ArgumentTypeError(f"must be between 0 (the default) and 64, not {number}")
            return number

        parser.add_argument(
            "--jobs",
            type=jobs,
            default=0,
            metavar="N",
            help="processes for an offline method's traces (0 to 64; default 0: one per CPU core, at most 8; "
            "1: this one)",
        )
        parser.add_argument(
            "--reuse",
            action="store_true",
            help="score the newest finished run over the same traces instead of running again",
        )
        parser.add_argument(
            "--compare",
            default="",
            help="also score this method on the same traces (schema_guided compares with heuristic "
            "unless told otherwise; 'none' to skip)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        project = Project.objects.filter(name=options["project"]).first()
        if project is None:
            raise CommandError(f"no project called {options['project']!r}")
        if options["cv"]:
            self._cross_validate(project, options)
            return
        ids = labelled_trace_ids(project=project, split=options["split"])
        if not ids:
            raise CommandError("no trace with a gold label in this project (and split)")
        compare = options["compare"] or ("heuristic" if options["method"] == "schema_guided" else "none")
        if options["method"] == "schema_guided" or compare == "schema_guided":
            # The cache learns from every verified case first; each trace is then attributed without its own
            # cases (leave-one-out, inside the method's schema source).
            from attribution.schemas.services import schemas_distill

            schemas_distill(project=project)
        results = [self._evaluate(project, options["method"], ids, options)]
        if compare not in ("none", options["method"]):
            results.append(self._evaluate(project, compare, ids, options))
        if options["json"]:
            self.stdout.write(
                json.dumps(results[0] | ({"compared": results[1]} if len(results) > 1 else {}), indent=2)
            )
        else:
            self.stdout.write("\n\n".join(format_table(r) for r in results))

    def _evaluate(
        self, project: Project, method: str, ids: list[int], options: dict[str, Any]
    ) -> dict[str, Any]:
        with_truth = not options["without_ground_truth"]
        attributor = (
            _attributor(options["model"], project) if method == "learned" and options["model"] else None
        )
        run = (
            selectors.reusable_run(
                project=project, method=method, trace_ids=ids, with_ground_truth=with_truth
            )
            if options["reuse"] and not attributor
            else None
        )
        try:
            run = run or services.run_create(
                project=project,
                method=method,
                trace_ids=ids,
                model="" if method == "learned" else options["model"],
                with_ground_truth=with_truth,
                attributor=attributor,
                description=f"evaluate ({options['split']})",
                enqueue=False,
            )
        except MethodError as exc:
            raise CommandError(str(exc)) from None
        jobs = options["jobs"] or min(8, os.cpu_count() or 1)
        run = services.run_execute_inline(run=run, jobs=jobs)
        train = None
        extra: dict[str, Any] = {}
        left_out: set[int] = set()
        if method == "learned":
            from attribution.learning.cv import record
            from attribution.learning.selectors import in_sample_traces, trained_on, training_examples

            row = AttributorModel.objects.get(pk=run.params["attributor"])
            training_ids = row.training_project_ids
            # Transfer: the baselines learn from the model's training projects, as the model did.
            train = [
                record(e, None)
                for e in training_examples(project_ids=training_ids, sources=row.label_sources)
            ]
            extra = {"attributor": row.label, "training_projects": [p["name"] for p in row.training_projects]}
            # Scored on the traces it learned from, a model shows its memory: they are left out, as on the page.
            left_out = in_sample_traces(ids, trained_on(row))
            if left_out:
                extra["left_out"] = len(left_out)
                extra["warning"] = (
                    f"{len(left_out)} trace(s) the model trained on are left out of the score; "
                    "use --cv K for cross-validated figures on all of them"
                )
        records = evaluation_records(run=run, leave_out=left_out)
        if not records and left_out:
            raise CommandError(
                f"every labelled trace here ({len(left_out)}) is one {extra['attributor']} trained on: scored on "
                "them it would show its memory; use --cv K, or evaluate on a project it did not learn from"
            )
        return {
            "project": project.name,
            "method": run.method,
            "model": run.model,
            "split": options["split"],
            "with_ground_truth": with_truth,
            "run_id": run.pk,
            "failed": run.failed,
            **extra,
            **score(records, train=train),
        }

    def _cross_validate(self, project: Project, options: dict[str, Any]) -> None:
        from attribution.learning.calibration import Calibration
        from attribution.learning.cv import cross_validate
        from attribution.learning.model import fit
        from attribution.learning.selectors import training_examples
        from attribution.learning.services import MIN_TRAINING_TRACES
        from attribution.methods.heuristic import METHOD as HEURISTIC

        method = options["method"]
        if method not in ("learned", "heuristic"):
            raise CommandError("--cv applies to the methods that learn from labels: learned, heuristic")
        with_truth = not options["without_ground_truth"]
        in_split = set(labelled_trace_ids(project=project, split=options["split"]))
        labelled = [e for e in training_examples(project_ids=[project.pk]) if e.view.trace_id in in_split]
        # A label whose step is not in its trace scores nothing honestly (a baseline could even learn the bad index).
        examples = [e for e in labelled if 0 <= e.step < len(e.view.steps)]
        skipped = len(labelled) - len(examples)
        if len(examples) < MIN_TRAINING_TRACES:
            raise CommandError(
                f"cross-validation needs at least {MIN_TRAINING_TRACES} labelled traces in this project (and "
                f"split); it has {len(examples)}"
                + (f" ({skipped} more with a label outside its trace)" if skipped else "")
            )

        def learned(train):
            model = fit(train, with_ground_truth=with_truth)
            return lambda view: model.run(view, with_ground_truth=with_truth)

        def calibrated(train):
            calibration = Calibration.fit((e.view, e.step) for e in train)
            return lambda view: HEURISTIC.run(view, with_ground_truth=with_truth, calibration=calibration)

        def built_in(train):
            return lambda view: HEURISTIC.run(view, with_ground_truth=with_truth)

        fitters = (
            {"learned": learned, "heuristic (calibrated)": calibrated, "heuristic": built_in}
            if method == "learned"
            else {"heuristic (calibrated)": calibrated, "heuristic": built_in}
        )
        try:
            result = cross_validate(examples, fitters, k=options["cv"])
        except MethodError as exc:
            raise CommandError(str(exc)) from None
        rows = [
            {
                "project": project.name,
                "method": name,
                "model": "",
                "split": options["split"],
                "with_ground_truth": with_truth,
                "failed": 0,
                "folds": result["folds"],
                **figures,
            }
            for name, figures in result["methods"].items()
        ]
        if options["json"]:
            self.stdout.write(
                json.dumps({"folds": result["folds"], "n": result["n"], "methods": rows}, indent=2)
            )
        else:
            self.stdout.write("\n\n".join(format_table(r) for r in rows))


BASELINE_NAMES = {
    "majority": "most blamed / commonest",
    "first": "first agent action",
    "last": "last agent action",
    "random": "random acting agent",
    "random_blamed": "random ever-blamed agent",
}


def _attributor(name: str, project: Project) -> AttributorModel:
    """A trained model by [PROJECT/]NAME[:vN], its newest version unless one is named: the evaluated project's own
    first, else the one project that has a model of that name (a transfer); a name several other projects use must
    say whose."""
    owner, _, rest = name.rpartition("/")
    base, _, version = rest.partition(":v")
    rows = AttributorModel.objects.filter(name=base, status="succeeded").select_related("project")
    if version:
        if not (version.isascii() and version.isdigit()):
            raise CommandError(f"{name!r}: a version is written NAME:vN, N a whole number")
        rows = rows.filter(version=int(version))
    if owner:
        rows = rows.filter(project__name=owner)
    elif rows.filter(project=project).exists():
        rows = rows.filter(project=project)
    else:
        projects = sorted(set(rows.values_list("project__name", flat=True)))
        if len(projects) > 1:
            raise CommandError(
                f"models called {base!r} are in several projects; say whose: "
                + ", ".join(f"{p}/{rest}" for p in projects)
            )
    row = rows.order_by("-version", "-pk").first()
    if row is None:
        raise CommandError(f"no trained model called {name!r}")
    return row


def _folds(value: str) -> int:
    """--cv K: 0 (the default) for none, else at least two folds."""
    try:
        folds = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if folds != 0 and not 2 <= folds <= 50:
        raise argparse.ArgumentTypeError(f"{folds} folds: give 2 to 50 (or 0 for none)")
    return folds


def format_table(r: dict[str, Any]) -> str:
    pct = lambda x: f"{100 * x:5.1f}%"  # noqa: E731
    ci = lambda pair: f"[{100 * pair[0]:.0f}–{100 * pair[1]:.0f}]"  # noqa: E731
    b = r["baselines"]
    how = f"{r['folds']}-fold cross-validation, " if r.get("folds") else ""
    lines = [
        f"{r['method']} on {r['project']} ({how}{r['split']}, n={r['n']}, "
        f"{'with' if r['with_ground_truth'] else 'without'}"
        f" ground truth{', ' + str(r['failed']) + ' failed' if r['failed'] else ''})",
        *(
            [f"model {r['attributor']} trained on {', '.join(r['training_projects'])}"]
            if r.get("attributor")
            else []
        ),
        *([f"warning: {r['warning']}"] if r.get("warning") else []),
        f"{'':26}{'agent':>8}{'step':>8}{'joint':>8}{'step±1':>8}{'step±3':>8}{'step±5':>8}",
        f"{r['method'][:26]:26}{pct(r['agent_accuracy']):>8}{pct(r['step_accuracy']):>8}"
        f"{pct(r['joint_accuracy']):>8}"
        + "".join(f"{pct(r['step_accuracy_within'][k]):>8}" for k in ("1", "3", "5")),
        f"{'  95% interval':26}{ci(r['intervals']['agent']):>8}{ci(r['intervals']['step']):>8}"
        f"{ci(r['intervals']['joint']):>8}",
        "baselines (fitted on training data only):",
        *(
            f"{'  ' + label:26}{pct(b[key]['agent']):>8}{pct(b[key]['step']):>8}"
            for key, label in BASELINE_NAMES.items()
            if key in b
        ),
        f"Who&When scorer-compatible (substring rule): agent {pct(r['scorer_compatible']['agent'])}, "
        f"step {pct(r['scorer_compatible']['step'])}",
        f"per trace: {r['calls']:.1f} calls, {r['tokens']:.0f} tokens, ${r['cost']:.4f}",
    ]
    return "\n".join(lines)
