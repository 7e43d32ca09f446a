"""``create_queue``: create a review queue from the command line, with the checks and defaults of the queues page.

The options are the page's fields (validated by the same form); ``--if-missing`` leaves a queue of that name alone
(``make run`` uses it for the demo's queue, so starting again changes nothing).
"""

from __future__ import annotations

import json

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.urls import reverse

from annotations.forms import QueueForm
from annotations.models import Assignment, QueueSource, ReviewQueue, TaxonomyFamily
from annotations.selectors import DEFAULT_LIMIT, DEFAULT_THRESHOLD
from tracing.formats import all_formats
from tracing.management.commands._pure_json import PureJsonMixin
from tracing.models import Project, Trace


def known_formats(project: Project) -> list[str]:
    """What ``--format`` may be: the trace list's format filter values (the formats of the project's traces, e.g.
    ``sandbox``) and the importable formats."""
    present = (
        Trace.objects.filter(project=project).values_list("source_format", flat=True).distinct().order_by()
    )
    return sorted({f.name for f in all_formats()} | set(present))


class Command(PureJsonMixin, BaseCommand):
    help = (
        "Create a review queue in a project and fill it from its source (the queues page's form, as options)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="project name")
        parser.add_argument("--name", required=True, help="the queue's name (unique in the project)")
        parser.add_argument("--source", choices=QueueSource.values, default=QueueSource.NO_GOLD)
        parser.add_argument("--q", default="", help="with --source search: the trace list's search")
        parser.add_argument("--gold", choices=["", "yes", "no"], default="", help="with --source search")
        parser.add_argument(
            "--format",
            default="",
            help="with --source search: one source format (an importable format, or one of the project's traces')",
        )
        parser.add_argument(
            "--scope",
            default="",
            help="every filter of the trace list, as its query string (e.g. 'outcome=failed&agent=WebSurfer'); "
            "the source is then a search",
        )
        parser.add_argument(
            "--threshold", type=float, default=DEFAULT_THRESHOLD, help="with --source low_confidence"
        )
        parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help="at most this many traces")
        parser.add_argument("--overlap", type=int, default=2, help="annotators per item")
        parser.add_argument(
            "--annotator",
            action="append",
            default=[],
            dest="annotators",
            help="only these annotators may label (a username; repeat for several)",
        )
        parser.add_argument("--blind", action="store_true", help="hide the methods' verdicts from annotators")
        parser.add_argument("--taxonomy", choices=TaxonomyFamily.values, default=TaxonomyFamily.AGENT_ERROR)
        parser.add_argument(
            "--step-tolerance", type=int, default=1, help="steps within ±k count as agreement"
        )
        parser.add_argument("--instructions", default="", help="shown to annotators above every item")
        parser.add_argument("--owner", default="", help="the username recorded as the queue's creator")
        parser.add_argument("--if-missing", action="store_true", help="do nothing if the queue exists")
        parser.add_argument("--json", action="store_true", help="print {queue, name, items, url} as JSON")

    def handle(self, *args, **options) -> None:
        # --format narrows a trace-list search and nothing else: the other sources (and a --scope, which carries its
        # own format=) would drop it without a word, so it is refused before anything is looked up or written.
        if options["format"] and options["scope"]:
            raise CommandError(
                "--format only applies with --source search; with --scope, put format=... in the scope"
            )
        if options["format"] and options["source"] != QueueSource.SEARCH:
            raise CommandError(
                f"--format only applies with --source search (the source is {options['source']})"
            )
        project = Project.objects.filter(name=options["project"]).first()
        if project is None:
            raise CommandError(f"no project named {options['project']!r}")
        if options["format"] and options["format"] not in (known := known_formats(project)):
            raise CommandError(f"unknown format {options['format']!r} (known formats: {', '.join(known)})")
        existing = ReviewQueue.objects.filter(project=project, name=options["name"].strip()).first()
        if existing is not None and options["if_missing"]:
            self._report(existing, options, created=False)
            return
        users = get_user_model().objects
        annotators = list(users.filter(username__in=options["annotators"]))
        missing = set(options["annotators"]) - {u.username for u in annotators}
        if missing:
            raise CommandError(f"no user named {', '.join(sorted(missing))}")
        owner = users.filter(username=options["owner"]).first() if options["owner"] else None
        if options["owner"] and owner is None:
            raise CommandError(f"no user named {options['owner']!r}")
        form = QueueForm(
            {
                "name": options["name"],
                "instructions": options["instructions"],
                "source": options["source"],
                "q": options["q"],
                "gold": options["gold"],
                "format": options["format"],
                "scope": options["scope"],
                "threshold": options["threshold"],
                "limit": options["limit"],
                "overlap": options["overlap"],
                "assignment": Assignment.NAMED if annotators else Assignment.ANYONE,
                "annotators": [u.pk for u in annotators],
                "blind": options["blind"],
                "taxonomy": options["taxonomy"],
                "step_tolerance": options["step_tolerance"],
            },
            project=project,
        )
        if not form.is_valid():
            reasons = "; ".join(f"{field}: {' '.join(errors)}" for field, errors in form.errors.items())
            raise CommandError(f"the queue was not created: {reasons}")
        queue = form.queue_create(owner)
        self._report(queue, options, created=True)

    def _report(self, queue: ReviewQueue, options: dict, *, created: bool) -> None:
        items = queue.items.count()
        path = reverse("annotations:queue_detail", kwargs={"queue_id": queue.pk})
        if options["json"]:
            out = {"queue": queue.pk, "name": queue.name, "items": items, "created": created, "url": path}
            self.stdout.write(json.dumps(out))
        elif created:
            self.stdout.write(f"Queue {queue.name!r}: {items} item(s), at {path}")
        else:
            self.stdout.write(f"Queue {queue.name!r} already exists ({items} item(s)), at {path}")
