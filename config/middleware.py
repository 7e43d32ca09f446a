from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.cache import patch_vary_headers


class HtmxMiddleware:
    """Sets ``request.htmx`` and marks responses as varying on it, so a cache never serves a partial as a page.

    A history-restore request (Back after htmx's history cache missed) also carries ``HX-Request``, but htmx puts its
    answer into ``<body>``: it must get the whole page, so it does not count as an htmx request here."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        restore = request.headers.get("HX-History-Restore-Request") == "true"
        request.htmx = request.headers.get("HX-Request") == "true" and not restore
        response = self.get_response(request)
        patch_vary_headers(response, ("HX-Request", "HX-History-Restore-Request"))
        return response


class ContentSecurityPolicyMiddleware:
    """Adds the Content-Security-Policy header (``settings.CULPRIT_CSP``) to every response that has none: only the
    app's own scripts run, so a script smuggled into a trace's text could not execute even if it escaped escaping."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if "Content-Security-Policy" not in response:
            docs = request.path.startswith("/api/docs")
            response["Content-Security-Policy"] = settings.CULPRIT_CSP_DOCS if docs else settings.CULPRIT_CSP
        return response


class RejectNulMiddleware:
    """A query string with a NUL character is answered ``400`` here: PostgreSQL text cannot hold NUL, so such a
    search would otherwise fail deep in a query as a server error. (Forms reject NUL on their own.)"""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if any("\x00" in key or any("\x00" in v for v in values) for key, values in request.GET.lists()):
            message = "NUL characters are not allowed in the query string"
            if request.path.startswith("/api/"):
                return JsonResponse({"detail": message}, status=400)
            return HttpResponse(f"{message}\n", status=400, content_type="text/plain")
        return self.get_response(request)
