from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from attribution.learning.selectors import VERIFIED_SOURCES
from attribution.learning.services import (
    DEFAULT_FOLDS,
    attributor_create,
    attributor_make_default,
    attributor_train,
)
from attribution.methods.base import MethodError
from attribution.models import AttributorModel
from tracing.management.commands._arguments import whole
from tracing.management.commands._pure_json import PureJsonMixin
from tracing.models import Project


class Command(PureJsonMixin, BaseCommand):
    help = (
        "Train a learned attributor on the verified labels of one or more projects: grouped K-fold "
        "cross-validation first, then a fit on every label. The model is stored in the first project."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--project",
            action="append",
            required=True,
            help="a project whose labels it learns from (repeat for more); the first one keeps it",
        )
        parser.add_argument("--name", required=True)
        parser.add_argument(
            "--sources",
            default=",".join(VERIFIED_SOURCES),
            help=f"label sources to learn from, comma-separated (default: {','.join(VERIFIED_SOURCES)})",
        )
        parser.add_argument(
            "--folds",
            type=whole(2, 10),
            default=DEFAULT_FOLDS,
            help="cross-validation folds, 2 to 10 (default 5)",
        )
        parser.add_argument("--make-default", action="store_true", help="make it the first project's default")
        parser.add_argument(
            "--if-missing",
            action="store_true",
            help="train only if the first project has no trained model of this name yet (else report that one)",
        )
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        projects = []
        for name in options["project"]:
            project = Project.objects.filter(name=name).first()
            if project is None:
                raise CommandError(f"no project called {name!r}")
            projects.append(project)
        sources = [s.strip() for s in options["sources"].split(",") if s.strip()]
        existing = (
            AttributorModel.objects.filter(project=projects[0], name=options["name"], status="succeeded")
            .order_by("-version")
            .first()
            if options["if_missing"]
            else None
        )
        if existing is not None:
            self._report(existing, options, trained=False)
            return
        try:
            row = attributor_create(
                project=projects[0],
                name=options["name"],
                projects=projects,
                sources=sources,
                folds=options["folds"],
                enqueue=False,
            )
        except MethodError as exc:
            raise CommandError(str(exc)) from None
        row = attributor_train(model_id=row.pk)
        if row.status != "succeeded":
            raise CommandError(f"training failed: {row.error}")
        if options["make_default"]:
            attributor_make_default(model=row)
        self._report(row, options, trained=True)

    def _report(self, row: AttributorModel, options: dict[str, Any], *, trained: bool) -> None:
        out = {
            "name": row.name,
            "version": row.version,
            "n_traces": row.n_traces,
            "n_steps": row.n_steps,
            "cv": {
                "agent_accuracy": row.cv["agent_accuracy"],
                "step_accuracy": row.cv["step_accuracy"],
                "folds": row.cv["folds"],
                "intervals": row.cv["intervals"],
                "baselines": row.cv["baselines"],
                # The heuristic on the same folds, calibrated as the project's is (models trained before 2026-12-04: none).
                **({"heuristic": row.cv["heuristic"]} if row.cv.get("heuristic") else {}),
            },
            "seconds": row.seconds,
            "trained": trained,
            # Labels left out because their step is not in their trace.
            "skipped": (row.summary or {}).get("skipped", {"count": 0, "traces": []}),
        }
        if options["json"]:
            self.stdout.write(json.dumps(out, indent=2))
            return
        pct = lambda x: f"{100 * x:.1f}%"  # noqa: E731
        ci = row.cv["intervals"]
        self.stdout.write(
            ("Trained " if trained else "Already trained (not trained again): ")
            + f"{row.label} on {row.n_traces} traces ({row.n_steps} candidate steps) in {row.seconds:.1f} s.\n"
            f"{row.cv['folds']}-fold cross-validated: agent {pct(row.cv['agent_accuracy'])} "
            f"[{pct(ci['agent'][0])}–{pct(ci['agent'][1])}], step {pct(row.cv['step_accuracy'])} "
            f"[{pct(ci['step'][0])}–{pct(ci['step'][1])}]"
            + (
                f" (the heuristic on the same folds: agent {pct(heuristic['agent_accuracy'])}, "
                f"step {pct(heuristic['step_accuracy'])})"
                if (heuristic := row.cv.get("heuristic"))
                else ""
            )
            + ("; it is now the project's default." if options["make_default"] else "")
        )
