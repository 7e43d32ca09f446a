from __future__ import annotations

from django import template

from attribution.taxonomy import label

register = template.Library()


@register.filter
def category_label(code: str) -> str:
    return label(code)


@register.filter
def delta(predicted: int | None, gold: int) -> str:
    if predicted is None:
        return "?"
    diff = predicted - gold
    return f"{diff:+d}"


@register.filter
def pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


@register.filter
def ci(interval: list[float] | None) -> str:
    """A Wilson 95% interval as the small grey span the figure tables show after a figure."""
    from django.utils.html import format_html

    if not interval:
        return ""
    return format_html('<span class="ci" title="Wilson 95% interval">{}–{}</span>', pct(interval[0]), pct(interval[1]))
