"""The content hash of a trace: what makes two imports "the same run", whatever the files were called.

SHA-256 over a canonical JSON Lines text: one line per step, ``[agent, kind, content]`` in step order, then one line
``{"ground_truth": ..., "question": ...}``. The header comes last because streaming readers only learn it after the
steps. Only what is stored on the Trace and Step rows goes in, exactly as stored (agent name cut to 200 characters,
unknown kinds as "message", NUL as U+FFFD), so the same function computes it from a parsed trace at import and from
the database in the backfill migration. File name, trace name, upload time, metadata and labels stay out: a re-import
with labels is still the same run.

Pure Python with no model imports, so migrations can use it.
"""

from __future__ import annotations

import hashlib
import json
from json.encoder import encode_basestring_ascii as _quoted

STEP_KINDS = frozenset({"message", "thought", "llm_call", "tool_call", "tool_result", "human", "system"})
AGENT_NAME_LENGTH = 200


def clean_text(text: str | None) -> str:
    # PostgreSQL text cannot hold NUL; traces from the wild sometimes do. U+FFFD keeps the position visible.
    return (text or "").replace("\x00", "\ufffd")


def stored_agent(name: str | None) -> str | None:
    """The agent name a step is stored with (None: no agent); NUL as U+FFFD, as in text."""
    return clean_text(name)[:AGENT_NAME_LENGTH] if name else None


def stored_kind(kind: str) -> str:
    return kind if kind in STEP_KINDS else "message"


class ContentHasher:
    """Feed steps in order, then ask for the digest with the header. Holds nothing but the running SHA-256."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()

    def add_step(self, *, agent: str | None, kind: str, content: str) -> None:
        # ``_canonical([agent, kind, content])`` spelled out: json.dumps set up an encoder per call, ~40% of the
        # import's hashing for small steps (issue 19). Same bytes (tests/tracing/test_import_duplicates.py).
        name = "null" if agent is None else _quoted(agent)
        self._digest.update(f"[{name},{_quoted(kind)},{_quoted(content)}]\n".encode())

    def hexdigest(self, *, question: str, ground_truth: str) -> str:
        digest = self._digest.copy()
        line = _canonical({"ground_truth": clean_text(ground_truth), "question": clean_text(question)})
        digest.update(line.encode())
        return digest.hexdigest()

    def _line(self, value: object) -> None:
        self._digest.update(_canonical(value).encode())


def _canonical(value: object) -> str:
    # json.dumps escapes newlines inside strings, so one value is exactly one line; ASCII escapes keep a lone
    # surrogate (possible in parsed JSON) hashable.
    return json.dumps(value, ensure_ascii=True, sort_keys=True, separators=(",", ":")) + "\n"
