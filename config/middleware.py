from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.utils.cache import patch_vary_headers


class HtmxMiddleware:
    """Sets ``request.htmx`` and marks responses as varying on it, so a cache never serves a partial as a page."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.htmx = request.headers.get("HX-Request") == "true"  # type: ignore[attr-defined]
        response = self.get_response(request)
        patch_vary_headers(response, ("HX-Request",))
        return response


class ContentSecurityPolicyMiddleware:
    """Adds the Content-Security-Policy header (``settings.CULPRIT_CSP``) to every response that has none: only the
    app's own scripts run, so a script smuggled into a trace's text could not execute even if it escaped escaping."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        from django.conf import settings

        response = self.get_response(request)
        if "Content-Security-Policy" not in response:
            docs = request.path.startswith("/api/docs")
            response["Content-Security-Policy"] = settings.CULPRIT_CSP_DOCS if docs else settings.CULPRIT_CSP
        return response
