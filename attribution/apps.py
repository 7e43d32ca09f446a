from __future__ import annotations

from django.apps import AppConfig


class AttributionConfig(AppConfig):
    name = "attribution"
    verbose_name = "Attribution"

    def ready(self) -> None:
        from tracing.api import api

        from .replay.hook_contract import openapi_extend

        if openapi_extend not in api.openapi_extenders:
            api.openapi_extenders.append(openapi_extend)
