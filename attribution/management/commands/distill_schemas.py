from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from attribution.schemas.services import schemas_distill
from tracing.management.commands._pure_json import PureJsonMixin
from tracing.models import Project


class Command(PureJsonMixin, BaseCommand):
    help = (
        "Distil a project's verified cases (imported, adjudicated, injected labels; counterfactual-confirmed "
        "verdicts) into error schemas, in this process. With a model configured, the model writes their prose."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True)
        parser.add_argument("--offline", action="store_true", help="never ask the project's model for prose")
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def handle(self, *args: Any, **options: Any) -> None:
        project = Project.objects.filter(name=options["project"]).first()
        if project is None:
            raise CommandError(f"no project called {options['project']!r}")
        report = schemas_distill(project=project, polish=not options["offline"])
        figures = {k: v for k, v in asdict(report).items() if k != "schema_ids"}
        if options["json"]:
            self.stdout.write(json.dumps(figures))
            return
        self.stdout.write(
            f"Error schemas for {project.name!r}: {report.cases} new verified case(s) -> "
            f"{report.created} new schema(s), {report.merged} merged into existing ones, "
            f"{report.promoted} promoted to trusted"
            f"{f', {report.polished} written up by the model' if report.polished else ''}."
        )
