from __future__ import annotations

from django.apps import AppConfig


class AttributionConfig(AppConfig):
    name = "attribution"
    verbose_name = "Attribution"

    def ready(self) -> None:
        from tracing import extensions
        from tracing.api import api

        from . import step_moves, trace_list
        from .api import router
        from .replay.hook_contract import openapi_extend
        from .services.auto import traces_arrived
        from .services.campaigns import campaigns_forget_traces
        from .services.runs import runs_forget_traces

        # ready() can run twice (some test runners re-populate apps); the router is attached once.
        if not any(mounted is router for _, mounted, *_ in api._routers):
            api.add_router("/", router)

        for extend in (openapi_extend, trace_list.openapi_extend):
            if extend not in api.openapi_extenders:
                api.openapi_extenders.append(extend)
        # Verdict columns and filters on the trace list, the blame strip, category names: tracing asks, never imports.
        trace_list.register()
        step_moves.register()  # verdicts' per-step scores follow a renumbered OTLP step
        extensions.register_traces_arrived(traces_arrived)  # new traces wait for automatic attribution
        # Runs and campaigns over deleted traces let them go and can still finish.
        extensions.register_traces_deleted(runs_forget_traces)
        extensions.register_traces_deleted(campaigns_forget_traces)
