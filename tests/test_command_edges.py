"""Commands that wrote where they should not: an export over a device or a folder, the demo bootstrap over a
password someone chose."""

from __future__ import annotations

import io
import os

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.utils import timezone

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("target", ["/dev/null", "-", "DIR", "MISSING/x.jsonl"])
def test_an_export_is_written_only_to_a_regular_file(project, imported_trace, tmp_path, target):
    out = {"DIR": str(tmp_path), "MISSING/x.jsonl": str(tmp_path / "missing" / "x.jsonl")}.get(target, target)
    with pytest.raises(CommandError, match="--out"):
        call_command("export_dataset", "--project", project.name, "--format", "whowhen-jsonl", "--out", out)
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")
    assert not os.path.exists("-") and not os.path.exists("/dev/null.manifest.json")


def test_an_export_refuses_an_agreement_outside_zero_to_one(project, imported_trace, tmp_path):
    with pytest.raises(CommandError, match="--min-agreement must be between 0 and 1"):
        call_command(
            "export_dataset",
            "--project",
            project.name,
            "--format",
            "csv",
            "--out",
            str(tmp_path / "x.csv"),
            "--min-agreement",
            "2",
        )


def test_the_demo_bootstrap_leaves_a_used_accounts_password_alone(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    User = get_user_model()
    alice = User.objects.create_user(username="alice", password="her own secret")
    alice.last_login = timezone.now()
    alice.save()
    out = io.StringIO()
    call_command("bootstrap_demo", "--username", "alice", "--project", "Alice demo", stdout=out)
    alice.refresh_from_db()
    assert alice.check_password("her own secret")
    assert "left as it is" in out.getvalue()
    # an account nobody has signed in with yet (a demo install whose var/ was lost) gets the printed password
    fresh = User.objects.create_user(username="fresh", password="old")
    call_command("bootstrap_demo", "--username", "fresh", "--project", "Fresh demo", stdout=io.StringIO())
    fresh.refresh_from_db()
    assert fresh.check_password((tmp_path / "demo-password.txt").read_text().strip())
