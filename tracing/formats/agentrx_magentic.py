"""AgentRx Magentic-One trajectories (microsoft/AgentRx, ``data/magentic_dataset/``): one failed run per JSON file.

The file is a bare list of messages ``[{content, role}]`` in which ``role`` is the speaker, as in Who&When's
Hand-Crafted subset: ``human``, ``Orchestrator (thought)``, ``Orchestrator (-> WebSurfer)``, ``WebSurfer``, …
The file's stem is the trajectory id that the AgentRx ground truth (``magentic_one_ground_truth.json``) refers to,
with 1-based ``step_number``s counting these messages, so step ``i`` here is message ``i + 1`` there.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

from .base import ParsedTrace, Source, TraceFormatError
from .whowhen import _agents_in_order, _parse_message

# Speakers only a Magentic-One team produces; plain chat lists (user/assistant) do not contain them.
_MAGENTIC_SPEAKER = re.compile(
    r"^(Orchestrator\b|WebSurfer$|FileSurfer$|Coder$|ComputerTerminal$|.+\((?:->\s*[^)]*|thought|termination condition)\)$)"
)
_CHAT_ROLES = {"user", "assistant", "system", "tool", "function", "developer"}


class AgentRxMagentic:
    name = "agentrx-magentic"
    label = "AgentRx Magentic-One message list"

    def detect(self, source: Source) -> float:
        head = source.head_text()
        if not head.startswith("[") or '"role"' not in head or '"content"' not in head:
            return 0.0
        try:
            document = source.json()
        except TraceFormatError:
            return 0.0
        if not _is_message_list(document):
            return 0.0
        roles = {str(m.get("role") or "").strip() for m in document}
        if any(_MAGENTIC_SPEAKER.match(role) for role in roles):
            return 0.9
        # A list of chat-API roles is some other tool's message dump: importable, but not ours to claim.
        return 0.3 if roles <= _CHAT_ROLES else 0.5

    def parse(self, source: Source) -> Iterator[ParsedTrace]:
        document = source.json()
        if not isinstance(document, list):
            raise TraceFormatError(
                "an AgentRx Magentic-One file must be a JSON list of {role, content} messages"
            )
        if not document:
            raise TraceFormatError("the message list is empty: there are no steps to import")
        yield parse_messages(document, path=source.name)


def parse_messages(messages: list[Any], *, path: str) -> ParsedTrace:
    steps = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message:
            raise TraceFormatError(f"message {index} is not an object with a 'role'")
        steps.append(_parse_message(index, message))
    stem = PurePosixPath(path.replace("\\", "/")).stem
    question = next((s.content for s in steps if s.kind == "human"), "")
    warnings = [] if question else ["no human message: the run's question is unknown"]
    return ParsedTrace(
        name=_name(path),
        source_format=AgentRxMagentic.name,
        steps=steps,
        agents=_agents_in_order(steps, {}),
        external_id=stem,
        question=question,
        # AgentRx collected only failed Magentic-One runs.
        outcome="failed",
        metadata={"dataset": "AgentRx Magentic-One"},
        warnings=warnings,
    )


def _is_message_list(document: Any) -> bool:
    return (
        isinstance(document, list)
        and bool(document)
        and all(isinstance(m, dict) and "role" in m and "content" in m for m in document[:20])
    )


def _name(path: str) -> str:
    """``magentic/2dfc4c37-….json`` -> ``magentic/2dfc4c37-…``; a bare file name keeps only its stem."""
    parts = [
        p for p in PurePosixPath(path.replace("\\", "/")).with_suffix("").parts[-2:] if p not in ("/", "")
    ]
    return "/".join(parts) or path


FORMAT = AgentRxMagentic()
