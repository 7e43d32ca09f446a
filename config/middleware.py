from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
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


def request_refusal(exc: BaseException) -> tuple[str, int] | None:
    """Why Django refused to read a request (its parameters, form or files), said so a person can act on it, and the
    status; None for any other exception. Django's own answer is a bare "Bad Request (400)" page, from the JSON API
    too."""
    if isinstance(exc, TooManyFieldsSent):
        return f"too many parameters in one request: at most {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS:,}", 400
    if isinstance(exc, TooManyFilesSent):
        return f"too many files in one request: at most {settings.DATA_UPLOAD_MAX_NUMBER_FILES:,}", 400
    if isinstance(exc, RequestDataTooBig):
        return f"the request body is over {settings.DATA_UPLOAD_MAX_MEMORY_SIZE // (1024 * 1024)} MB", 413
    if isinstance(exc, MultiPartParserError):
        return "a malformed multipart/form-data body (no boundary, or a part that does not end)", 400
    return None


def refusal_response(request: HttpRequest, message: str, status: int) -> HttpResponse:
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": message}, status=status)
    return HttpResponse(f"{message}\n", status=status, content_type="text/plain; charset=utf-8")


class RejectNulMiddleware:
    """A query string with a NUL character is answered ``400`` here: PostgreSQL text cannot hold NUL, so such a
    search would otherwise fail deep in a query as a server error. (Forms reject NUL on their own.) A request Django
    will not read (too many parameters or files, too big, malformed multipart) is answered here too, with the reason
    (``request_refusal``), whether it shows here or in a view."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            nul = any(
                "\x00" in key or any("\x00" in v for v in values) for key, values in request.GET.lists()
            )
        except TooManyFieldsSent as exc:
            return self.process_exception(request, exc)
        if nul:
            return refusal_response(request, "NUL characters are not allowed in the query string", 400)
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        refused = request_refusal(exc)
        return None if refused is None else refusal_response(request, *refused)
