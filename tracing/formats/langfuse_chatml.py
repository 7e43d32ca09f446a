"""Langfuse's ChatML rendering of a trace: ``{observation_id: {input: {success, data: [messages] | error},
output: {…}}}``, what Langfuse's UI and tests derive from observations to show them as chat. It has no names,
types, parents or times, so the trace is the observations in file order: each one's input messages, then its output
as the model's answer. Parsing errors Langfuse recorded for a side (``success: false``) are kept as visible steps.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

from .base import ParsedAgent, ParsedStep, ParsedTrace, Source, TraceFormatError, json_text

_ID = re.compile(r"^[0-9a-fA-F-]{8,64}$")
_ROLE_NAME = re.compile(r"^\s*You are (?:an? |the )?([^.\n]{2,60})\.", re.IGNORECASE)


class LangfuseChatml:
    name = "langfuse-chatml"
    label = "Langfuse ChatML rendering"

    def detect(self, source: Source) -> float:
        head = source.head_text()
        if (
            not head.startswith("{")
            or '"success"' not in head
            or not ('"input"' in head or '"output"' in head)
        ):
            return 0.0
        try:
            document = source.json()
        except TraceFormatError:
            return 0.0
        return 0.9 if _is_rendering(document) else 0.0

    def parse(self, source: Source) -> Iterator[ParsedTrace]:
        document = source.json()
        if not _is_rendering(document):
            raise TraceFormatError("expected Langfuse's ChatML rendering: {observation id: {input, output}}")
        steps: list[ParsedStep] = []
        prompts: dict[str, str] = {}
        agent = "assistant"
        for observation_id, sides in document.items():
            agent = _agent(sides, agent, prompts)
            for side in ("input", "output"):
                if isinstance(sides.get(side), dict):
                    steps.extend(_side_steps(observation_id, side, sides[side], agent))
        if not steps:
            raise TraceFormatError("the rendering holds no messages")
        stem = PurePosixPath(source.name.replace("\\", "/")).name.split(".")[0]
        yield ParsedTrace(
            name=stem,
            source_format=self.name,
            steps=steps,
            agents=[ParsedAgent(name=a, system_prompt=p) for a, p in prompts.items()],
            question=next((s.content.strip() for s in steps if s.kind == "human"), "")[:2000],
            metadata={"observations": len(document)},
            warnings=[
                "Langfuse ChatML rendering: no names, times or parent links; observations in file order"
            ],
        )


def _is_rendering(document: Any) -> bool:
    return (
        isinstance(document, dict)
        and bool(document)
        and all(
            isinstance(k, str)
            and _ID.match(k)
            and isinstance(v, dict)
            and v
            and set(v) <= {"input", "output"}
            and all(isinstance(side, dict) and "success" in side for side in v.values())
            for k, v in document.items()
        )
    )


def _agent(sides: dict[str, Any], current: str, prompts: dict[str, str]) -> str:
    """The acting agent: named by the observation's system prompt ("You are Software developer."), else the last."""
    data = sides.get("input", {}).get("data") if isinstance(sides.get("input"), dict) else None
    for message in data if isinstance(data, list) else []:
        if isinstance(message, dict) and message.get("role") == "system":
            text = json_text(message.get("content"))
            match = _ROLE_NAME.match(text)
            name = match.group(1).strip() if match else current
            prompts.setdefault(name, text)
            return name
    return current


def _side_steps(observation_id: str, side: str, payload: dict[str, Any], agent: str) -> list[ParsedStep]:
    common = {"agent": agent, "span_id": observation_id, "raw": None}
    if not payload.get("success"):
        error = payload.get("error")
        detail = json_text(error.get("message") if isinstance(error, dict) else error)
        return [
            ParsedStep(
                speaker=f"{side} (not renderable)",
                kind="system",
                content=f"Langfuse could not render this {side} as chat: {detail}",
                **common,
            )
        ]
    data = payload.get("data")
    messages = data if isinstance(data, list) else [data]
    steps = []
    for message in messages:
        role = str(message.get("role") or "") if isinstance(message, dict) else ""
        content = message.get("content") if isinstance(message, dict) and "content" in message else message
        if isinstance(content, dict) and set(content) == {"json"}:
            content = (
                content["json"].get("raw", content["json"]) if isinstance(content["json"], dict) else content
            )
        text = json_text(content)
        if side == "output":
            steps.append(ParsedStep(speaker=role or "output", kind="llm_call", content=text, **common))
        elif role == "system":
            steps.append(ParsedStep(speaker="system", kind="system", content=text, **common))
        elif role in ("user", "human"):
            steps.append(ParsedStep(speaker=role, kind="human", content=text, **{**common, "agent": "user"}))
        else:
            steps.append(ParsedStep(speaker=role or side, kind="message", content=text, **common))
    return steps


FORMAT = LangfuseChatml()
