"""AgentRx ground truth (microsoft/AgentRx, ``data/ground_truth/``): failure labels for trajectories in other files.

Each file is a list of ``{trajectory_id, failures[{failure_id, step_number, failed_agent, failure_category,
step_reason, category_reason}], root_cause{failure_id, reason_for_root_cause}, failure_summary}``.
``trajectory_id`` is the Magentic-One file's stem (a string) or the tau-bench ``task_id`` (a number);
``step_number`` is 1-based over the trajectory's messages (for tau-bench it equals ``traj[i].index``, system prompt
included). ``root_cause.failure_id`` is sometimes a string ("1") where ``failures[].failure_id`` is a number.

Every failure of a trajectory becomes a label of the "AgentRx" family (stored as an error label each, in file order);
the decisive one, which also becomes the gold label, is the root-cause failure, or the earliest failure when no root
cause is named.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .base import (
    ParsedGold,
    ParsedLabels,
    Source,
    TraceFormatError,
    list_of_records_confidence,
    normalise_speaker,
)

FAMILY = "AgentRx"  # the taxonomy family of the failure categories, as error labels record it
# Agent names as the traces spell them; a label spelled otherwise ("Websurfer") is kept but flagged.
_KNOWN_AGENTS = ("Orchestrator", "WebSurfer", "FileSurfer", "Coder", "ComputerTerminal", "Assistant", "User")


class AgentRxLabels:
    name = "agentrx-labels"
    label = "AgentRx ground-truth labels"

    def detect(self, source: Source) -> float:
        return list_of_records_confidence(
            source, markers=("trajectory_id", "failures"), keys=("trajectory_id", "failures")
        )

    def parse(self, source: Source) -> Iterator[ParsedLabels]:
        document = source.json()
        if not isinstance(document, list):
            raise TraceFormatError(
                "an AgentRx ground-truth file must be a JSON list of {trajectory_id, failures}"
            )
        if not document:
            raise TraceFormatError("the ground-truth list is empty")
        spellings = _spellings(document)
        # Everything is parsed before the first yield, so a bad entry late in the file imports nothing.
        parsed = [_parse_trajectory(i, entry, spellings) for i, entry in enumerate(document)]
        yield from parsed


def _parse_trajectory(position: int, entry: Any, spellings: dict[str, str]) -> ParsedLabels:
    if not isinstance(entry, dict):
        raise TraceFormatError(f"entry {position} is not an object")
    trajectory_id = entry.get("trajectory_id")
    if (
        isinstance(trajectory_id, bool)
        or not isinstance(trajectory_id, (str, int))
        or str(trajectory_id) == ""
    ):
        raise TraceFormatError(f"entry {position} has no trajectory_id (a string or number)")
    where = f"trajectory {trajectory_id}"
    failures = entry.get("failures")
    if not isinstance(failures, list):
        raise TraceFormatError(f"{where}: 'failures' must be a list")
    failures = [_failure(where, i, f) for i, f in enumerate(failures)]
    warnings: list[str] = []
    if not failures:
        warnings.append("no failures are labelled for this trajectory")
        return ParsedLabels(str(trajectory_id), [], AgentRxLabels.name, warnings)

    root = _root_cause(entry.get("root_cause"), failures, warnings)
    for failure in failures:
        agent = failure["agent"]
        canonical = spellings.get(agent.lower(), agent)
        if agent and canonical != agent:
            warnings.append(
                f"step {failure['step']}: failed_agent {agent!r} differs in case from {canonical!r}; "
                "the trace's spelling is used when the label attaches"
            )
    labels = [
        ParsedGold(
            agent=f["agent"],
            step=f["step"] - 1,
            reason=f["reason"],
            category=f["category"],
            decisive=f is root,
            family=FAMILY,
        )
        for f in failures
    ]
    return ParsedLabels(str(trajectory_id), labels, AgentRxLabels.name, warnings)


def _failure(where: str, position: int, failure: Any) -> dict[str, Any]:
    if not isinstance(failure, dict):
        raise TraceFormatError(f"{where}: failure {position} is not an object")
    step = _step_number(failure.get("step_number"))
    if step is None:
        raise TraceFormatError(
            f"{where}: failure {position} has no step_number (a whole number from 1), "
            f"got {failure.get('step_number')!r}"
        )
    return {
        "id": str(failure.get("failure_id", "")),
        "step": step,
        "agent": normalise_speaker(_text(failure.get("failed_agent"))).agent,
        "category": _text(failure.get("failure_category")),
        "reason": _text(failure.get("step_reason")),
    }


def _step_number(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and value >= 1 else None


def _root_cause(root: Any, failures: list[dict[str, Any]], warnings: list[str]) -> dict[str, Any]:
    earliest = min(failures, key=lambda f: f["step"])
    root_id = root.get("failure_id") if isinstance(root, dict) else None
    if root_id in (None, ""):
        warnings.append(
            f"no root cause is named: the earliest failure (step {earliest['step']}) is taken as decisive"
        )
        return earliest
    # ids are compared as text: the root cause says "1" where the failure says 1.
    match = next((f for f in failures if f["id"] == str(root_id)), None)
    if match is None:
        warnings.append(
            f"the root cause names failure {root_id!r}, which is not listed: the earliest failure "
            f"(step {earliest['step']}) is taken as decisive"
        )
        return earliest
    return match


def _spellings(document: list[Any]) -> dict[str, str]:
    """Lower-cased name -> the spelling the traces use: known agent names first, else the commonest in the file."""
    counts: dict[str, int] = {}
    for entry in document:
        failures = entry.get("failures") if isinstance(entry, dict) else None
        for failure in failures if isinstance(failures, list) else []:
            if isinstance(failure, dict):
                name = normalise_speaker(_text(failure.get("failed_agent"))).agent
                counts[name] = counts.get(name, 0) + 1
    spellings: dict[str, str] = {}
    for name in sorted(counts, key=lambda n: -counts[n]):
        spellings.setdefault(name.lower(), name)
    spellings.update({name.lower(): name for name in _KNOWN_AGENTS})
    return spellings


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


FORMAT = AgentRxLabels()
