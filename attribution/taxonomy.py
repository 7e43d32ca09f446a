"""Failure taxonomies, as codes verdicts and annotations use.

- AgentErrorTaxonomy (AgentDebug, 2025): modules and error types, coded ``module.type``.
- MAST (2025): 14 failure modes in three groups, coded ``mast.N.M``; labels are per trace in MAST itself.
- TRAIL (2025): the categories its label files carry, coded ``trail.<slug>``.
"""

from __future__ import annotations

from dataclasses import dataclass

TAXONOMY_VERSION = "culprit-taxonomy/1 (AgentErrorTaxonomy 2025, MAST 2025, TRAIL 2025)"


@dataclass(frozen=True)
class Category:
    code: str
    label: str
    family: str  # agent_error_taxonomy, mast, trail
    group: str


_AGENT_ERROR_TAXONOMY = {
    "memory": ["over-simplification", "retrieval failure", "hallucination"],
    "reflection": ["progress misjudgement", "outcome misinterpretation", "causal misattribution", "hallucination"],
    "planning": ["constraint ignorance", "impossible action", "inefficient plan"],
    "action": ["misalignment", "invalid action", "format error", "parameter error"],
    "system": ["step limit", "tool execution error", "LLM limit", "environment error"],
}

_MAST = {
    "1 specification": ["disobey task specification", "disobey role specification", "step repetition",
                        "loss of conversation history", "unaware of termination conditions"],
    "2 inter-agent misalignment": ["conversation reset", "fail to ask for clarification", "task derailment",
                                   "information withholding", "ignored other agent's input",
                                   "reasoning-action mismatch"],
    "3 verification": ["premature termination", "no or incomplete verification", "incorrect verification"],
}

_TRAIL = {
    "reasoning": ["Language-only", "Tool-related", "Poor Information Retrieval", "Tool Output Misinterpretation",
                  "Incorrect Problem Identification", "Formatting Errors", "Instruction Non-compliance"],
    "system execution": ["Tool Selection Errors", "Tool Definition Issues", "Environment Setup Errors",
                         "Rate Limiting", "Authentication Errors", "Service Errors", "Resource Not Found",
                         "Resource Exhaustion", "Timeout Issues"],
    "planning and coordination": ["Context Handling Failures", "Resource Abuse", "Goal Deviation",
                                  "Task Orchestration"],
}


def _slug(text: str) -> str:
    return "_".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def _build() -> dict[str, Category]:
    out: dict[str, Category] = {}
    for module, types in _AGENT_ERROR_TAXONOMY.items():
        for kind in types:
            code = f"{module}.{_slug(kind)}"
            out[code] = Category(code, f"{module.capitalize()}: {kind}", "agent_error_taxonomy", module)
    for group, modes in _MAST.items():
        number = group.split(" ", 1)[0]
        for i, mode in enumerate(modes, start=1):
            code = f"mast.{number}.{i}"
            out[code] = Category(code, f"MAST {number}.{i} {mode}", "mast", group.split(" ", 1)[1])
    for group, categories in _TRAIL.items():
        for name in categories:
            code = f"trail.{_slug(name)}"
            out[code] = Category(code, f"TRAIL: {name}", "trail", group)
    return out


CATEGORIES: dict[str, Category] = _build()


def label(code: str) -> str:
    category = CATEGORIES.get(code)
    return category.label if category else code


def is_known(code: str) -> bool:
    return code in CATEGORIES


def choices(family: str | None = None) -> list[tuple[str, str]]:
    return [(c.code, c.label) for c in CATEGORIES.values() if family is None or c.family == family]
