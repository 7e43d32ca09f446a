from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from attribution import services
from tracing import services as tracing_services
from tracing.management.commands._arguments import check_options, whole

MAX_RUNS = 100_000  # the documented runs are at most 20 (docs/replay-and-injection.md); the page allows 500
MAX_SEED = 10**9


# --runs 0 is documented: fault-free runs only (with --clean).
CHECKED = {"runs": whole(0, MAX_RUNS), "clean": whole(0, MAX_RUNS), "seed": whole(0, MAX_SEED)}


class Command(BaseCommand):
    help = (
        "Run the built-in sandbox multi-agent system, inject one fault into each run, and keep the runs the fault "
        "broke as traces of a project, each labelled (source: injected) at its faulty step; with --clean, also "
        "store fault-free runs for injection campaigns. Idempotent."
    )

    def add_base_argument(self, parser: CommandParser, *args: Any, **kwargs: Any) -> None:
        if "--version" not in args:  # here --version picks the sandbox's version, not Django's
            super().add_base_argument(parser, *args, **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="created if it does not exist")
        parser.add_argument(
            "--version",
            type=int,
            choices=(1, 2),
            default=2,
            help="2 (default): sandbox v2 failures, labelled at the step whose resample alone saves the run; "
            "1: v1 runs, whose replayer rebuilds the fault from the run's name (kept for regression)",
        )
        parser.add_argument(
            "--mode",
            choices=("injected", "natural"),
            default="injected",
            help="v2: runs selected for an injected scenario, or natural failures as they come",
        )
        parser.add_argument(
            "--runs",
            type=CHECKED["runs"],
            default=10,
            help=f"sandbox runs to try (0 to {MAX_RUNS:,}; 0 with --clean: fault-free runs only)",
        )
        parser.add_argument("--seed", type=CHECKED["seed"], default=1, help=f"0 to {MAX_SEED:,}")
        parser.add_argument(
            "--clean",
            type=CHECKED["clean"],
            default=0,
            help=f"also store this many fault-free (successful) v1 runs, for injection campaigns (0 to {MAX_RUNS:,})",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        check_options(options, CHECKED)  # again for call_command's keyword options, which skip ``type``
        if not options["runs"] and not options["clean"]:
            raise CommandError("nothing to generate: --runs 0 needs --clean N (fault-free runs)")
        project, _ = tracing_services.project_get_or_create(name=options["project"])
        if options["version"] == 2:
            kept, existing = services.sandbox_cases_generate(
                project=project, runs=options["runs"], seed=options["seed"], version=2, mode=options["mode"]
            )
            self.stdout.write(
                f"Sandbox v2: {kept} new {options['mode']} failed run(s) in {project.name!r}"
                f"{f', {existing} already there' if existing else ''}."
            )
        else:
            kept, existing = services.sandbox_cases_generate(
                project=project, runs=options["runs"], seed=options["seed"]
            )
            self.stdout.write(
                f"Sandbox v1: {kept} new failed run(s) with an injected fault in {project.name!r}"
                f"{f', {existing} already there' if existing else ''}."
            )
        if options["clean"]:
            written, there = services.sandbox_clean_runs_generate(
                project=project, runs=options["clean"], seed=options["seed"]
            )
            self.stdout.write(
                f"Sandbox v1: {written} new successful run(s) to inject faults into"
                f"{f', {there} already there' if there else ''}."
            )
