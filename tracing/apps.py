from __future__ import annotations

from django.apps import AppConfig


class TracingConfig(AppConfig):
    name = "tracing"
    verbose_name = "Traces"

    def ready(self) -> None:
        from pathlib import Path

        from django.conf import settings

        Path(settings.STATIC_ROOT).mkdir(
            parents=True, exist_ok=True
        )  # WhiteNoise warns on every start without it
