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
    # What a person reads on a page ("Action: did something other than it planned (misalignment)"); ``label`` is the
    # taxonomy's own wording, which the LLM prompts quote.
    name: str = ""


# Plain-language names for every category, read by people on the review, verdict and schema pages, each ending in the
# taxonomy's own term so annotators trained on it find it. The terms alone stay in ``label`` for the prompts.
_HUMAN = {
    "memory.over_simplification": "Memory: over-simplified what it knew (over-simplification)",
    "memory.retrieval_failure": "Memory: missed information it had (retrieval failure)",
    "memory.hallucination": "Memory: stated something it never saw (hallucination)",
    "reflection.progress_misjudgement": "Reflection: misjudged how far the task had got (progress misjudgement)",
    "reflection.outcome_misinterpretation": "Reflection: misread the result of an action (outcome misinterpretation)",
    "reflection.causal_misattribution": "Reflection: blamed the wrong cause (causal misattribution)",
    "reflection.hallucination": "Reflection: imagined a result (hallucination)",
    "planning.constraint_ignorance": "Planning: ignored a constraint of the task (constraint ignorance)",
    "planning.impossible_action": "Planning: planned an impossible action",
    "planning.inefficient_plan": "Planning: wasteful plan (inefficient plan)",
    "action.misalignment": "Action: did something other than it planned (misalignment)",
    "action.invalid_action": "Action: invalid action",
    "action.format_error": "Action: badly formatted action (format error)",
    "action.parameter_error": "Action: wrong parameters (parameter error)",
    "system.step_limit": "System: ran out of steps (step limit)",
    "system.tool_execution_error": "System: a tool failed (tool execution error)",
    "system.llm_limit": "System: hit a model limit: context, rate or refusal (LLM limit)",
    "system.environment_error": "System: the environment failed (environment error)",
    "mast.1.1": "Disobeyed the task specification (MAST 1.1)",
    "mast.1.2": "Stepped out of its role (MAST 1.2)",
    "mast.1.3": "Repeated a step (MAST 1.3)",
    "mast.1.4": "Lost the conversation history (MAST 1.4)",
    "mast.1.5": "Did not know when to stop (MAST 1.5)",
    "mast.2.1": "Restarted the conversation (MAST 2.1)",
    "mast.2.2": "Did not ask for clarification (MAST 2.2)",
    "mast.2.3": "Drifted off the task (MAST 2.3)",
    "mast.2.4": "Withheld information (MAST 2.4)",
    "mast.2.5": "Ignored another agent's input (MAST 2.5)",
    "mast.2.6": "Acted against its own reasoning (MAST 2.6)",
    "mast.3.1": "Stopped too early (MAST 3.1)",
    "mast.3.2": "Did not check the result, or only partly (MAST 3.2)",
    "mast.3.3": "Checked the result wrongly (MAST 3.3)",
    # TRAIL's terms are short labels of its paper's definitions ("Tool-related" hallucinations, "Language-only" ones).
    "trail.language_only": "Stated something it never saw (TRAIL: Language-only)",
    "trail.tool_related": "Made up a tool, a tool call or its result (TRAIL: Tool-related)",
    "trail.poor_information_retrieval": "Retrieved the wrong or too little information (TRAIL: Poor Information "
    "Retrieval)",
    "trail.tool_output_misinterpretation": "Misread a tool's output (TRAIL: Tool Output Misinterpretation)",
    "trail.incorrect_problem_identification": "Misunderstood the problem (TRAIL: Incorrect Problem Identification)",
    "trail.formatting_errors": "Badly formatted output or tool call (TRAIL: Formatting Errors)",
    "trail.instruction_non_compliance": "Did not follow its instructions (TRAIL: Instruction Non-compliance)",
    "trail.tool_selection_errors": "Chose the wrong tool (TRAIL: Tool Selection Errors)",
    "trail.tool_definition_issues": "A tool was defined wrongly (TRAIL: Tool Definition Issues)",
    "trail.environment_setup_errors": "The environment was set up wrongly (TRAIL: Environment Setup Errors)",
    "trail.rate_limiting": "A service rate-limited it (TRAIL: Rate Limiting)",
    "trail.authentication_errors": "Could not authenticate with a service (TRAIL: Authentication Errors)",
    "trail.service_errors": "A service it called failed (TRAIL: Service Errors)",
    "trail.resource_not_found": "Asked for something that does not exist (TRAIL: Resource Not Found)",
    "trail.resource_exhaustion": "Ran out of memory, disk or quota (TRAIL: Resource Exhaustion)",
    "trail.timeout_issues": "A call timed out (TRAIL: Timeout Issues)",
    "trail.context_handling_failures": "Lost or misused earlier context (TRAIL: Context Handling Failures)",
    "trail.resource_abuse": "Called tools far more than needed (TRAIL: Resource Abuse)",
    "trail.goal_deviation": "Drifted from the goal (TRAIL: Goal Deviation)",
    "trail.task_orchestration": "Coordinated subtasks or agents badly (TRAIL: Task Orchestration)",
}


_AGENT_ERROR_TAXONOMY = {
    "memory": ["over-simplification", "retrieval failure", "hallucination"],
    "reflection": [
        "progress misjudgement",
        "outcome misinterpretation",
        "causal misattribution",
        "hallucination",
    ],
    "planning": ["constraint ignorance", "impossible action", "inefficient plan"],
    "action": ["misalignment", "invalid action", "format error", "parameter error"],
    "system": ["step limit", "tool execution error", "LLM limit", "environment error"],
}

_MAST = {
    "1 specification": [
        "disobey task specification",
        "disobey role specification",
        "step repetition",
        "loss of conversation history",
        "unaware of termination conditions",
    ],
    "2 inter-agent misalignment": [
        "conversation reset",
        "fail to ask for clarification",
        "task derailment",
        "information withholding",
        "ignored other agent's input",
        "reasoning-action mismatch",
    ],
    "3 verification": ["premature termination", "no or incomplete verification", "incorrect verification"],
}

_TRAIL = {
    "reasoning": [
        "Language-only",
        "Tool-related",
        "Poor Information Retrieval",
        "Tool Output Misinterpretation",
        "Incorrect Problem Identification",
        "Formatting Errors",
        "Instruction Non-compliance",
    ],
    "system execution": [
        "Tool Selection Errors",
        "Tool Definition Issues",
        "Environment Setup Errors",
        "Rate Limiting",
        "Authentication Errors",
        "Service Errors",
        "Resource Not Found",
        "Resource Exhaustion",
        "Timeout Issues",
    ],
    "planning and coordination": [
        "Context Handling Failures",
        "Resource Abuse",
        "Goal Deviation",
        "Task Orchestration",
    ],
}


def _slug(text: str) -> str:
    return "_".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def _build() -> dict[str, Category]:
    out: dict[str, Category] = {}
    for code, category in _build_labels().items():
        out[code] = Category(
            category.code, category.label, category.family, category.group, _HUMAN.get(code, category.label)
        )
    return out


def _build_labels() -> dict[str, Category]:
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


def human_name(code: str) -> str:
    """What a person reads for a category code; an unknown code (an old or foreign one) still reads as words:
    'tool.bad_call' -> 'Tool: bad call', never the raw id."""
    category = CATEGORIES.get(code)
    if category:
        return category.name
    if not code:
        return ""
    head, _, tail = code.partition(".")
    words = tail.replace("_", " ").replace(".", " ").strip()
    return f"{head.replace('_', ' ').capitalize()}: {words}" if words else head.replace("_", " ").capitalize()


def is_known(code: str) -> bool:
    return code in CATEGORIES


def choices(family: str | None = None) -> list[tuple[str, str]]:
    return [(c.code, c.name) for c in CATEGORIES.values() if family is None or c.family == family]
