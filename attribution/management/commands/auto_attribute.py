from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from attribution import services
from attribution.methods import MethodError, all_methods
from attribution.models import AutoAttribute
from attribution.services.auto import auto_attribute_check
from tracing.models import Project


class Command(BaseCommand):
    help = (
        "Choose whether a project's new traces (uploads, the API, OTLP) are attributed automatically: off, failed "
        "or all, with a method (the project's default; see docs/attribution.md, automatic attribution)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="the project's name or slug")
        parser.add_argument("--mode", required=True, choices=AutoAttribute.values)
        parser.add_argument(
            "--method", default="", choices=["", *[m.name for m in all_methods()]], help="default: keep"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["project"]
        project = Project.objects.filter(slug=name).first() or Project.objects.filter(name=name).first()
        if project is None:
            raise CommandError(f"no such project: {name!r}")
        try:
            # As ``attribute`` and ``evaluate`` do: refuse a method whose runs could not start.
            if options["mode"] != AutoAttribute.OFF:
                auto_attribute_check(project=project, method=options["method"])
            settings = services.auto_attribute_set(
                project=project, mode=options["mode"], method=options["method"]
            )
        except MethodError as exc:
            raise CommandError(str(exc)) from None
        if settings.auto_attribute == AutoAttribute.OFF:
            self.stdout.write(f"{project.name}: new traces are not attributed automatically.")
        else:
            which = "failed traces" if settings.auto_attribute == AutoAttribute.FAILED else "traces"
            self.stdout.write(
                f"{project.name}: new {which} are attributed automatically with {settings.default_method}."
            )
