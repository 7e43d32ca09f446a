from __future__ import annotations

from django.apps import AppConfig


class AnnotationsConfig(AppConfig):
    name = "annotations"

    def ready(self) -> None:
        from tracing.api import api

        from .api import openapi_extend, router

        # ready() can run twice (some test runners re-populate apps); the router is attached once.
        if not any(mounted is router for _, mounted, *_ in api._routers):
            api.add_router("/", router)
        if openapi_extend not in api.openapi_extenders:
            api.openapi_extenders.append(openapi_extend)
