"""Matching an agent name written in a label file to an agent of the trace.

Label files are written by hand, apart from the runs: AgentRx writes "Websurfer" for the trace's "WebSurfer" (13 of
its 295 failures), MAST summaries say "orchestrator" for "MagenticOneOrchestrator". Attribution is scored by exact
name, so a label that misses the trace's spelling could never be hit. Resolution goes from strict to loose and stops
at the first rule that names exactly one agent; when none does, the label keeps its name as given.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

# Different names for one role across releases and datasets of the same framework (keys and values in key form).
ALIASES: dict[str, tuple[str, ...]] = {
    "orchestrator": ("magenticoneorchestrator", "ledgerorchestrator"),
    "magenticoneorchestrator": ("orchestrator",),
    "computerterminal": ("executor", "terminal"),
    "executor": ("computerterminal",),
    "coder": ("assistant",),
    "assistant": ("coder",),
    "userproxy": ("user", "human"),
    "user": ("userproxy", "human"),
    "human": ("user", "userproxy"),
}


class Named(Protocol):
    name: str


T = TypeVar("T", bound=Named)


def name_key(name: str) -> str:
    """Case, spaces, underscores, hyphens and dots do not tell agents apart: "Web_Surfer" -> "websurfer"."""
    return re.sub(r"[\s_.\-]+", "", name).casefold()


def agent_resolve(given: str, agents: Sequence[T]) -> T | None:
    """The one agent of ``agents`` that ``given`` names, or None."""
    key = name_key(given)
    rules: list[Callable[[T], bool]] = [
        lambda a: a.name == given,
        lambda a: name_key(a.name) == key,
        lambda a: name_key(a.name) in ALIASES.get(key, ()),
        # A suffix of 5+ characters ("Orchestrator" in "MagenticOneOrchestrator") when only one agent ends so:
        # "Surfer" names both WebSurfer and FileSurfer and resolves to none.
        lambda a: len(key) >= 5 and name_key(a.name).endswith(key),
    ]
    for rule in rules:
        found = [a for a in agents if rule(a)]
        if len(found) == 1:
            return found[0]
    return None
