from __future__ import annotations

from django import template

from attribution.taxonomy import human_name

register = template.Library()


@register.filter
def category_label(code: str) -> str:
    """A category's plain-language name, never its raw code ("action.misalignment")."""
    return human_name(code)


@register.filter
def llm_method_names(methods) -> str:
    """The methods that call the project's model, for a sentence: 'All-at-once, Step-by-step, Binary search and
    Hybrid' (their labels without the '(LLM)' mark and without a description after a colon)."""
    names = [m.label.removesuffix(" (LLM)").split(":")[0].strip() for m in methods if m.needs_llm]
    if len(names) < 2:
        return names[0] if names else "none"
    return ", ".join(names[:-1]) + " and " + names[-1]


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
def points(change: float | None) -> str:
    """A change of accuracy in percentage points, signed ("+4.2 pp", "−1.0 pp"); a dash when there is none."""
    if change is None:
        return "—"
    value = round(100 * change, 1)
    return "±0.0 pp" if value == 0 else f"{'+' if value > 0 else '−'}{abs(value):.1f} pp"


@register.filter
def ci(interval: list[float] | None) -> str:
    """A Wilson 95% interval as the small grey span the figure tables show after a figure."""
    from django.utils.html import format_html

    if not interval:
        return ""
    return format_html(
        '<span class="ci" title="Wilson 95% interval">{}–{}</span>', pct(interval[0]), pct(interval[1])
    )
