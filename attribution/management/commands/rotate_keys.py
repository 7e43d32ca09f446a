from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from attribution.crypto import DecryptionError, rotate
from attribution.models import ProjectLlmSettings
from tracing.services import audit_record

FIELDS = ("api_key_encrypted", "replay_hook_auth_encrypted")


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored provider key and replay-hook header with the first key of CULPRIT_FERNET_KEYS "
        "(after a new key was put first). Afterwards the old keys can be removed."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        rotated = 0
        with transaction.atomic():
            for settings in ProjectLlmSettings.objects.select_for_update().select_related("project"):
                changed = []
                for field in FIELDS:
                    value = getattr(settings, field)
                    if not value:
                        continue
                    try:
                        setattr(settings, field, rotate(value))
                    except DecryptionError as exc:
                        raise CommandError(f"project {settings.project.name!r}, {field}: {exc}") from None
                    changed.append(field)
                if changed:
                    settings.save(update_fields=[*changed, "updated_at"])
                    audit_record(
                        action="keys.rotated",
                        project=settings.project,
                        target="model settings",
                        details={"fields": changed},
                    )
                    rotated += len(changed)
        self.stdout.write(f"Re-encrypted {rotated} stored secret(s) with the current first key.")
