from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser

from tracing import selectors, services
from tracing.models import JobStatus, Role

DEMO_DATA = Path(__file__).resolve().parents[2] / "demo_data"


class Command(BaseCommand):
    help = "Create the demo account and project and load the demo traces (idempotent). Prints the login."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="demo")
        parser.add_argument("--project", default="Demo")
        parser.add_argument("--url", default="http://127.0.0.1:8000/", help="where the server will listen")

    def handle(self, *args: Any, **options: Any) -> None:
        username, password = options["username"], _demo_password()
        User = get_user_model()
        user = User.objects.filter(username=username).first()
        kept = False
        if user is None:
            user = User.objects.create_superuser(username=username, email="", password=password)
        elif not user.check_password(password):
            if (
                user.last_login is None
            ):  # never used: the demo login of an install that lost var/ (or a new one)
                user.set_password(password)
                user.save(update_fields=["password"])
            else:  # someone signs in with it: their password is theirs to change, not this command's
                kept = True
        project, _ = services.project_get_or_create(name=options["project"], owner=user)
        services.membership_set(project=project, user=user, role=Role.OWNER)
        files = {str(p.relative_to(DEMO_DATA)): p for p in sorted(DEMO_DATA.rglob("*.json"))}
        # Files imported by an earlier run are left out: uploading them again only listed them as "already
        # imported" on the upload page, eight rows more at every `make run`.
        done = selectors.imported_filenames(project=project, names=list(files))
        incoming = [
            services.IncomingFile(name=name, size=p.stat().st_size, open=lambda p=p: p.open("rb"))
            for name, p in files.items()
            if name not in done
        ]
        jobs = services.ingest_jobs_create(project=project, files=incoming, user=user, enqueue=False)
        imported = sum(
            services.ingest_job_run(job_id=j.pk).status == JobStatus.SUCCEEDED
            for j in jobs
            if j.status == JobStatus.QUEUED
        )
        self.stdout.write(
            f"Demo project {project.name!r}: {imported} new trace file(s), {len(files)} in the demo set."
        )
        if kept:
            self.stdout.write(
                self.style.WARNING(
                    f"Log in at {options['url']} as  {username}  with the password it has: the account was used "
                    f"and its password is not the demo one, so it was left as it is "
                    f"(`manage.py changepassword {username}` sets a new one)"
                )
            )
        else:
            self.stdout.write(self.style.SUCCESS(f"Log in at {options['url']} as  {username} / {password}"))


def _demo_password() -> str:
    """A random password made once per install and kept under var/, so every `make run` prints the same one."""
    path = Path(settings.VAR_DIR) / "demo-password.txt"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(9)
    path.write_text(password + "\n")
    path.chmod(0o600)
    return password
