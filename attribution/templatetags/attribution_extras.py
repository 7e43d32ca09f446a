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
