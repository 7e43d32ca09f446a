from __future__ import annotations

from django import template

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
def at(mapping: dict, key: object) -> list:
    """``mapping[key]`` or an empty list: the labelled errors of one step (``errors_by_step|at:s.index``)."""
    return (mapping or {}).get(key, [])
