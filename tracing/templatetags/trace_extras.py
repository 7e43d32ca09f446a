from __future__ import annotations

import re
from typing import Any

from django import template
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

# Bodies longer than this are collapsed behind a "show all" toggle; the preview keeps the first lines readable.
COLLAPSE_CHARS = 800
PREVIEW_CHARS = 400


@register.filter
def is_long(text: str) -> bool:
    return len(text or "") > COLLAPSE_CHARS or (text or "").count("\n") > 14


@register.filter
def preview(text: str) -> str:
    text = text or ""
    lines = text.split("\n")[:8]
    return "\n".join(lines)[:PREVIEW_CHARS]


@register.filter
def at(mapping: dict, key: object) -> Any:
    """``mapping[key]`` or an empty list: the labelled errors of one step (``errors_by_step|at:s.index``)."""
    return (mapping or {}).get(key, [])


@register.filter
def duration(ms: float | None) -> str:
    """Milliseconds as people read them: "840 ms", "2.4 s", "3 m 05 s", "1 h 02 m"."""
    if ms is None:
        return ""
    if ms < 1:
        return "<1 ms"
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} m {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} m"


@register.filter
def tokens(n: int | None) -> str:
    if n is None:
        return ""
    return f"{n / 1000:.1f}k" if n >= 10_000 else f"{n:,}"


@register.filter
def cost(value: float | None) -> str:
    if value is None:
        return ""
    if value == 0:
        return "$0"
    if value < 0.0001:
        return "<$0.0001"
    return f"${value:.4f}" if value < 1 else f"${value:,.2f}"


# Where a long agent or tool name may wrap: after "_", ".", "/" or ":", and between the words of a camelCase name.
_WRAP_POINT = re.compile(r"(?<=[_./:])(?=.)|(?<=[a-z])(?=[A-Z])")


@register.filter
def wrappable(name: object) -> SafeString:
    """``name`` escaped, with ``<wbr>`` where it may wrap: "DataAnalysis_Expert" wraps as "Data|Analysis_|Expert"
    in a narrow column instead of at whichever letter meets the edge ("DataAnal|ysis_Exp|ert")."""
    parts = _WRAP_POINT.split(str(name or ""))
    return mark_safe("<wbr>".join(escape(part) for part in parts))  # noqa: S308 - every part is escaped


@register.inclusion_tag("tracing/_sort_header.html", takes_context=True)
def sort_header(context: dict, key: str, label: str, numeric: bool = False, css: str = "") -> dict:
    """A sortable column heading: a link that sorts by ``key`` (again: the other way), keeping the filters."""
    current = context.get("ordering") or ""
    active = current.lstrip("-") == key
    descending = current.startswith("-")
    # First click: numbers and dates sort largest/newest first, names A to Z.
    target = (key if descending else f"-{key}") if active else (f"-{key}" if numeric else key)
    query = context.get("sort_querystring") or ""
    return {
        "href": f"?{query}{'&' if query else ''}ordering={target}",
        "label": label,
        "active": active,
        "arrow": ("↓" if descending else "↑") if active else "",
        "numeric": numeric,
        "css": css,
        "aria": ("descending" if descending else "ascending") if active else "none",
    }


@register.simple_tag(takes_context=True)
def project_tab(context: template.Context, section: str, url_name: str, label: str) -> str:
    """One tab of the project's tab bar (``base.html``): a link to the project's page ``url_name``, marked current
    when the page being shown belongs to ``section`` (``config.navigation``)."""
    from django.urls import reverse
    from django.utils.html import format_html

    href = reverse(url_name, args=[context["project"].slug])
    if context.get("nav_section") == section:
        return format_html('<a href="{}" class="active" aria-current="page">{}</a>', href, label)
    return format_html('<a href="{}">{}</a>', href, label)


@register.filter
def seconds(value: int | float | None) -> str:
    """A wait as people say it: "45 s" under two minutes, else "3 min", "2 h 5 min"."""
    total = int(value or 0)
    if total < 120:
        return f"{total} s"
    hours, minutes = divmod(total // 60, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


@register.filter
def ago(value: Any) -> str:
    """ "just now" under a minute, else the largest unit: "3 minutes ago", "2 hours ago" (not "0 minutes ago", nor
    "2 hours, 3 minutes ago")."""
    from django.utils import timezone
    from django.utils.timesince import timesince

    if not value:
        return ""
    if (timezone.now() - value).total_seconds() < 60:
        return "just now"
    return f"{timesince(value, depth=1)} ago"
