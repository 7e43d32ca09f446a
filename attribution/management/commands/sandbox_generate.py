from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from attribution.replay import sandbox
from tracing import services as tracing_services
from tracing.models import LabelSource, Provenance, Trace


class Command(BaseCommand):
    help = ("Run the built-in sandbox multi-agent system, inject one fault into each run, and keep the runs the fault "
            "broke as traces of a project, each labelled (source: injected) at its faulty step. Idempotent.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="created if it does not exist")
        parser.add_argument("--runs", type=int, default=10)
        parser.add_argument("--seed", type=int, default=1)

    def handle(self, *args: Any, **options: Any) -> None:
        project, _ = tracing_services.project_get_or_create(name=options["project"])
        kept = existing = 0
        for i in range(options["runs"]):
            task_seed, fault_seed = options["seed"] + i, i
            name = sandbox.trace_name(task_seed, fault_seed)
            if Trace.objects.filter(project=project, name=name).exists():
                existing += 1
                continue
            result = sandbox.run(sandbox.generate_task(task_seed), sandbox.inject(task_seed, fault_seed))
            if result.outcome != "failure":
                continue  # the fault did not break this run (the verifier caught it): no labelled case
            parsed = sandbox.to_parsed(result, name=name, fault_seed=fault_seed)
            with transaction.atomic():
                tracing_services.trace_create_from_parsed(project=project, upload=None, ordinal=0, parsed=parsed,
                                                          provenance=Provenance.INJECTED,
                                                          label_source=LabelSource.INJECTED)
            kept += 1
        self.stdout.write(f"Sandbox: {kept} new failed run(s) with an injected fault in {project.name!r}"
                          f"{f', {existing} already there' if existing else ''}.")
