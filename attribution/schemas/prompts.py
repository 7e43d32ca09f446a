"""What the model is asked when it distils a schema's prose, and how its answer is read.

The model sees the schema's cases as DATA (rendered and neutralised like every trace) and the structure the extractor
found; it writes only a title, the context, the detection heuristic in words and a category. It never writes the
structured detection, so a model fooled by a crafted trace cannot change what retrieval and scoring read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import prompts as base

if TYPE_CHECKING:
    from ..models import ErrorSchema

# A schema's prompt shows at most this many of its cases, each step cut to this many characters.
MAX_CASES = 4
MAX_STEP_CHARS = 1500

DISTIL_SYSTEM = (
    base.SYSTEM_PROMPT
    + """

This time you are not attributing one run: you describe a recurring failure pattern ("error schema") shared by the \
decisive steps of several verified failed runs, so that it can be recognised in new runs."""
)


def distil_request(schema: ErrorSchema) -> str:
    from ..methods.base import StepView

    cases = []
    for exemplar in schema.exemplars.select_related("trace")[:MAX_CASES]:
        # The decisive step, and the tool output it produced when that comes next (where its failure shows).
        steps = list(
            exemplar.trace.steps.filter(index__in=[exemplar.step_index, exemplar.step_index + 1])
            .select_related("agent")
            .order_by("index")
        )
        steps = [s for s in steps if s.index == exemplar.step_index or s.kind == "tool_result"]
        if not steps or steps[0].index != exemplar.step_index:
            continue
        rendered = "\n".join(
            base.render_step(
                StepView(
                    index=s.index,
                    agent=s.agent.name if s.agent else "",
                    kind=s.kind,
                    content=s.content,
                    speaker=s.speaker,
                    recipient=s.recipient,
                    tool_name=s.tool_name,
                ),
                max_chars=MAX_STEP_CHARS,
            )
            for s in steps
        )
        cases.append(
            f'<trace name="{base._attr(exemplar.trace.name)}" decisive_step="{exemplar.step_index}">\n'
            f"{rendered}\n</trace>"
        )
    structure = base.neutralise(schema.detection_text)
    return (
        f"Decisive steps of {len(cases)} verified failed runs that share one structure:\n"
        + "\n".join(cases)
        + "\n\n"
        f"What they have in common, found by rules: {structure}\n\n"
        "Describe the pattern:\n"
        '1. "title": a short name for the failure pattern (at most 12 words).\n'
        '2. "context": when it arises, in one or two sentences.\n'
        '3. "detection": how to find the decisive step in a new run, in one or two sentences.\n'
        f'4. "category": the one code from this list that describes the mistake:\n{base.category_menu()}\n'
        'Answer with JSON only: {"title": "...", "context": "...", "detection": "...", "category": "..."}'
    )


def check_distilled(answer: dict[str, Any]) -> str | None:
    for key in ("title", "context", "detection"):
        if not isinstance(answer.get(key), str) or not answer[key].strip():
            return f'"{key}" must be a non-empty string'
    return None


def read_distilled(answer: dict[str, Any]) -> dict[str, str]:
    return {
        "title": answer["title"].strip()[:200],
        "context": answer["context"].strip()[:2000],
        "detection_text": answer["detection"].strip()[:2000],
        "category": base.category_of(answer),
    }
