"""tau-bench run dumps (sierra-research/tau-bench results, as shipped by microsoft/AgentRx ``data/tau_retail/``).

One file holds many runs: ``[{task_id, reward, info{task{user_id, instruction, actions, outputs}, reward_info, …},
traj[{role, content, tool_calls?, tool_call_id?, name?, index}], trial}]``. ``traj`` is the OpenAI chat history of
the agent: the retail policy as the ``system`` message, the simulated customer as ``user``, the agent as
``assistant`` (with ``tool_calls``) and tool outputs as ``tool``. ``index`` is 1-based and counts the system message.

The AgentRx ground truth names a run by its ``task_id`` (its ``trajectory_id``) and a step by ``index``
(``step_number`` == ``index``), so every message here is one step, in order, the system message included (kind
``system``): step ``i`` is ``index`` ``i + 1``. An assistant message with several tool calls would become one step
per call and push later steps out of line with those numbers; that is reported in the trace's warnings.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

from .base import (
    ParsedAgent,
    ParsedStep,
    ParsedTrace,
    Source,
    TraceFormatError,
    json_text,
    list_of_records_confidence,
)

# Names matching the AgentRx labels' ``failed_agent`` ("Assistant", "User"), so label agents resolve.
ASSISTANT = "Assistant"
USER = "User"


class TauBench:
    name = "taubench"
    label = "tau-bench run results"

    def detect(self, source: Source) -> float:
        return list_of_records_confidence(source, markers=("traj", "task_id"), keys=("task_id", "traj"))

    def parse(self, source: Source) -> Iterator[ParsedTrace]:
        document = source.json()
        if not isinstance(document, list) or not document:
            raise TraceFormatError(
                "a tau-bench results file must be a non-empty JSON list of runs {task_id, traj}"
            )
        stem = PurePosixPath(source.name.replace("\\", "/")).stem
        traces = [_parse_run(i, run, stem) for i, run in enumerate(document)]
        _disambiguate(traces)
        yield from traces


def _parse_run(position: int, run: Any, stem: str) -> ParsedTrace:
    if not isinstance(run, dict):
        raise TraceFormatError(f"run {position} is not an object")
    task_id = run.get("task_id")
    if isinstance(task_id, bool) or not isinstance(task_id, (int, str)) or str(task_id) == "":
        raise TraceFormatError(f"run {position} has no task_id")
    traj = run.get("traj")
    if not isinstance(traj, list) or not traj:
        raise TraceFormatError(
            f"run {position} (task {task_id}): 'traj' must be a non-empty list of messages"
        )
    info = run.get("info") if isinstance(run.get("info"), dict) else {}
    task = info.get("task") if isinstance(info.get("task"), dict) else {}
    warnings: list[str] = []
    steps = _steps(traj, f"task {task_id}", warnings)
    system_prompt = "\n\n".join(s.content for s in steps if s.kind == "system")
    return ParsedTrace(
        name=f"{stem}/task {task_id}",
        source_format=TauBench.name,
        steps=steps,
        agents=[ParsedAgent(USER), ParsedAgent(ASSISTANT, system_prompt=system_prompt)],
        external_id=str(task_id),
        question=_text(task.get("instruction")),
        ground_truth=_expected_outputs(task.get("outputs")),
        outcome=_outcome(run.get("reward")),
        metadata=_metadata(run, info, task),
        warnings=warnings,
    )


def _steps(traj: list[Any], where: str, warnings: list[str]) -> list[ParsedStep]:
    steps: list[ParsedStep] = []
    call_steps: dict[str, int] = {}  # tool_call id -> index of the step that made the call
    misnumbered = False
    for position, message in enumerate(traj):
        if not isinstance(message, dict):
            raise TraceFormatError(f"{where}: traj[{position}] is not an object")
        index = message.get("index")
        if index is not None and str(index) != str(position + 1) and not misnumbered:
            misnumbered = True  # one warning is enough: every later step is in doubt as well
            warnings.append(
                f"traj[{position}] has index {index!r}, not {position + 1}: labelled step numbers "
                "may not land on the right step"
            )
        new = _message_steps(message, f"{where}, traj[{position}]", call_steps, len(steps))
        if len(new) > 1:
            warnings.append(
                f"message {position + 1} made {len(new)} tool calls, split into {len(new)} steps: "
                "labelled step numbers after it are off by the extra steps"
            )
        for step in new:
            step.span_id = str(index if index is not None else position + 1)
        steps.extend(new)
    return steps


def _message_steps(
    message: dict[str, Any], where: str, call_steps: dict[str, int], next_index: int
) -> list[ParsedStep]:
    role = _text(message.get("role")).strip()
    content = json_text(message.get("content"))
    if role == "system":
        return [ParsedStep(speaker=role, agent=ASSISTANT, kind="system", content=content, raw=message)]
    if role == "user":
        return [
            ParsedStep(
                speaker=role, agent=USER, kind="human", content=content, recipient=ASSISTANT, raw=message
            )
        ]
    if role == "tool":
        parent = call_steps.get(_text(message.get("tool_call_id")))
        return [
            ParsedStep(
                speaker=role,
                agent=ASSISTANT,
                kind="tool_result",
                content=content,
                tool_name=_text(message.get("name")),
                parent=parent,
                raw=message,
            )
        ]
    if role != "assistant":
        raise TraceFormatError(f"{where}: unknown role {role!r} (expected system, user, assistant or tool)")
    calls = _tool_calls(message.get("tool_calls"), where)
    if not calls:
        return [
            ParsedStep(
                speaker=role, agent=ASSISTANT, kind="message", content=content, recipient=USER, raw=message
            )
        ]
    steps = []
    for number, call in enumerate(calls):
        name, arguments, call_id = _call(call, where)
        rendered = f"{name}({json.dumps(arguments, ensure_ascii=False)})"
        # The assistant's own words, when it wrote any beside the calls, go with the first call.
        text = f"{content}\n\n{rendered}" if content and number == 0 else rendered
        if call_id:
            call_steps[call_id] = next_index + number
        steps.append(
            ParsedStep(
                speaker=role,
                agent=ASSISTANT,
                kind="tool_call",
                content=text,
                tool_name=name,
                tool_arguments=arguments,
                raw=message if number == 0 else call,
            )
        )
    return steps


def _tool_calls(value: Any, where: str) -> list[Any]:
    """The list of calls; some dumps store it as text (JSON, or Python's repr of the list)."""
    if value in (None, "", "None", "[]"):
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                raise TraceFormatError(f"{where}: tool_calls is text that is not a list of calls") from None
    if not isinstance(value, list):
        raise TraceFormatError(f"{where}: tool_calls must be a list")
    return value


def _call(call: Any, where: str) -> tuple[str, Any, str]:
    if not isinstance(call, dict):
        raise TraceFormatError(f"{where}: a tool call is not an object")
    function = call.get("function") if isinstance(call.get("function"), dict) else call
    name = _text(function.get("name")).strip()
    if not name:
        raise TraceFormatError(f"{where}: a tool call has no function name")
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            pass  # kept as the text the model wrote: malformed arguments are part of what went wrong
    return name, arguments, _text(call.get("id"))


def _expected_outputs(outputs: Any) -> str:
    """tau-bench's ``outputs``: strings the agent's answers must contain (often none; then the expected
    ``actions``, kept in the metadata, are the only ground truth)."""
    if not isinstance(outputs, list):
        return ""
    return ", ".join(_text(o) for o in outputs if o is not None)


def _outcome(reward: Any) -> str:
    if isinstance(reward, bool) or not isinstance(reward, (int, float)):
        return "unknown"
    return "succeeded" if reward == 1 else "failed"


def _metadata(run: dict[str, Any], info: dict[str, Any], task: dict[str, Any]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"dataset": "tau-bench", "task_id": run.get("task_id")}
    for key in ("reward", "trial"):
        if key in run:
            metadata[key] = run[key]
    for key in ("user_id", "actions"):
        if key in task:
            metadata["expected_actions" if key == "actions" else key] = task[key]
    for key in ("source", "user_cost"):
        if key in info:
            metadata[key] = info[key]
    reward_info = info.get("reward_info")
    if isinstance(reward_info, dict) and "info" in reward_info:
        metadata["reward_details"] = reward_info["info"]  # e.g. which expected outputs were missing
    return metadata


def _disambiguate(traces: list[ParsedTrace]) -> None:
    """Several trials of one task share a task_id; the later ones get their trial in the name to stay apart."""
    seen: set[str] = set()
    for trace in traces:
        if trace.external_id in seen:
            trial = trace.metadata.get("trial", "?")
            trace.name = f"{trace.name} trial {trial}"
            trace.warnings.append(
                f"task {trace.external_id} appears more than once in the file: labels naming "
                "this task cannot tell its runs apart"
            )
        seen.add(trace.external_id)


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


FORMAT = TauBench()
