"""The dependency graph of a trace: which step could have been influenced by which.

Nodes are step indices. Edges, each with a ``kind``:

- ``order``: step i-1 -> i. Every step sees the conversation before it, so this says little; it is kept for drawing and
  is deliberately *not* followed by ``ancestors`` (it would make every earlier step an ancestor).
- ``parent``: a span parent -> its child (``StepView.parent``), and the action that produced a tool result -> that
  result (a ``tool_result`` without a parent is the output of the closest earlier step that is not itself a result).
- ``uses``: step j -> a later step i that repeats a distinctive token first seen in j (``via`` names the token):
  a number with two or more digits or a decimal point, a URL, a quoted string, a file name, or a code-like identifier
  of six or more characters. Tokens already in the question or a system prompt are given, not produced, and are
  ignored; so are tokens that recur in so many steps that they stop telling steps apart.

When several kinds link the same pair, ``kind`` is the strongest (parent, then uses, then order) and ``kinds`` lists
them all. The agent graph (``agent_graph``) is the same trace seen from the agents: who hands over to whom.
"""

from __future__ import annotations

import re
from collections import Counter, deque
from collections.abc import Iterator

import networkx as nx

from .methods.base import TraceView

_STRENGTH = {"parent": 0, "uses": 1, "order": 2}
_DEPENDENCY_KINDS = frozenset({"parent", "uses"})

# One pass of one regex per step; the named group says what kind of token matched.
_TOKEN = re.compile(
    r"""(?P<url>(?:https?|ftp)://[^\s<>"'`)\]]+)
      | (?<![\w'])(?P<q>["'`])(?P<quoted>[^"'`\n]{3,80}?)(?P=q)(?![\w'])
      | (?P<file>\b[\w\-]+\.(?:py|csv|json|jsonl|txt|pdf|xlsx?|docx?|pptx?|md|html?|xml|ya?ml|ipynb|sh|js|ts|zip|
                                png|jpe?g|gif|mp[34]|wav|pdb|gff3|gz|tsv|log|sql|db)\b)
      | (?P<number>(?<![\w.])\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\d])
                  | (?<![\w.])\d+\.\d+(?!\d|\.\d)
                  | (?<![\w.])\d{2,}(?![\d]))
      | (?P<ident>\b[A-Za-z_][A-Za-z0-9_]{5,}\b)
    """,
    re.VERBOSE,
)
_CODE_LIKE = re.compile(r"_|[a-z][A-Z]|[A-Za-z]\d|\d[A-Za-z]")
# A token seen in more steps than this share of the trace (and in more than this many steps) is background: a site's
# name on every page, the keys of Magentic-One's progress ledger (in a quarter of its steps). Short runs (AG2, ten
# steps) are never cut.
_BACKGROUND_SHARE = 0.2
_BACKGROUND_MIN_STEPS = 6
_MAX_TOKEN_LENGTH = 200


def tokens_of(text: str) -> Iterator[str]:
    """The distinctive tokens of ``text``, normalised (numbers without thousands separators, URLs without trailing
    punctuation), in order, repeats included."""
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup
        if kind == "url":
            token = match["url"].rstrip(".,;:!?")
        elif kind == "quoted" or match["quoted"] is not None:
            token = match["quoted"].strip()
            if len(token) < 3 or not any(c.isalnum() for c in token):
                continue
        elif kind == "file":
            token = match["file"]
        elif kind == "number":
            token = match["number"].replace(",", "")
        else:
            token = match["ident"]
            if not _CODE_LIKE.search(token):
                continue  # plain words ("because", "results") are not identifiers
        if len(token) <= _MAX_TOKEN_LENGTH:
            yield token


def build_graph(trace: TraceView) -> nx.DiGraph:
    graph = nx.DiGraph()
    for step in trace.steps:
        graph.add_node(step.index, agent=step.agent, kind=step.kind)
    for step in trace.steps[1:]:
        _add_edge(graph, step.index - 1, step.index, "order")
    for step, producer in _producers(trace):
        _add_edge(graph, producer, step, "parent")
    for source, target, token in _uses(trace):
        _add_edge(graph, source, target, "uses", via=token)
    return graph


def _add_edge(graph: nx.DiGraph, source: int, target: int, kind: str, via: str = "") -> None:
    data = graph.get_edge_data(source, target)
    if data is None:
        graph.add_edge(source, target, kind=kind, kinds=(kind,), **({"via": via} if via else {}))
        return
    kinds = tuple(sorted({*data["kinds"], kind}, key=_STRENGTH.__getitem__))
    data["kinds"], data["kind"] = kinds, kinds[0]
    if via and "via" not in data:
        data["via"] = via


def _producers(trace: TraceView) -> Iterator[tuple[int, int]]:
    """(step, the step it came out of): span parents, else, for tool results, the action just before them."""
    last_action: int | None = None
    for step in trace.steps:
        if step.parent is not None and 0 <= step.parent < step.index:
            yield step.index, step.parent
        elif step.kind == "tool_result" and last_action is not None:
            yield step.index, last_action
        if step.kind != "tool_result":
            last_action = step.index


def _uses(trace: TraceView) -> Iterator[tuple[int, int, str]]:
    """(first step with a token, later step repeating it, token), each pair once, in one pass over the tokens."""
    given = set(tokens_of(trace.question)) | set(trace.agents)
    given.update(name for step in trace.steps for name in (step.agent, step.recipient, step.tool_name) if name)
    for prompt in trace.system_prompts.values():
        given.update(tokens_of(prompt))
    first_seen: dict[str, int] = {}
    seen_in: Counter[str] = Counter()
    repeats: list[tuple[str, int]] = []
    for step in trace.steps:
        for token in dict.fromkeys(tokens_of(step.content)):
            if token in given:
                continue
            seen_in[token] += 1
            if token not in first_seen:
                first_seen[token] = step.index
            else:
                repeats.append((token, step.index))
    limit = max(_BACKGROUND_MIN_STEPS, _BACKGROUND_SHARE * len(trace.steps))
    linked: set[tuple[int, int]] = set()
    for token, target in repeats:
        source = first_seen[token]
        if seen_in[token] <= limit and (source, target) not in linked:
            linked.add((source, target))
            yield source, target, token


def _is_dependency(data: dict) -> bool:
    return not _DEPENDENCY_KINDS.isdisjoint(data["kinds"])


def ancestors(graph: nx.DiGraph, i: int) -> set[int]:
    """Every step that ``i`` depends on through parent and uses edges (not plain order), ``i`` excluded."""
    found: set[int] = set()
    queue = deque([i])
    while queue:
        node = queue.popleft()
        for source in graph.predecessors(node):
            if source not in found and _is_dependency(graph.edges[source, node]):
                found.add(source)
                queue.append(source)
    found.discard(i)
    return found


def explain_use(graph: nx.DiGraph, i: int) -> list[str]:
    """One sentence per earlier step whose output ``i`` repeats: "step 12 uses '17' from step 7"."""
    return [f"step {i} uses '{graph.edges[j, i]['via']}' from step {j}"
            for j in sorted(graph.predecessors(i)) if "uses" in graph.edges[j, i]["kinds"]]


def agent_graph(trace: TraceView) -> dict:
    """Agents (with their step counts) and who hands over to whom, for drawing.

    An edge a -> b counts ``handovers`` (a step of a directly followed by a step of b) and ``addressed`` (steps of a
    that name b as their recipient); ``count`` is their sum. Steps without an agent are skipped.
    """
    steps = Counter(s.agent for s in trace.steps if s.agent)
    handovers: Counter[tuple[str, str]] = Counter()
    addressed: Counter[tuple[str, str]] = Counter()
    previous = ""
    for step in trace.steps:
        if not step.agent:
            continue
        if previous and previous != step.agent:
            handovers[previous, step.agent] += 1
        if step.recipient and step.recipient != step.agent:
            addressed[step.agent, step.recipient] += 1
        previous = step.agent
    names = list(dict.fromkeys([*trace.agents, *steps, *(b for _, b in addressed)]))
    edges = [{"source": a, "target": b, "handovers": handovers[a, b], "addressed": addressed[a, b],
              "count": handovers[a, b] + addressed[a, b]}
             for a, b in sorted({*handovers, *addressed}, key=lambda p: (names.index(p[0]), names.index(p[1])))]
    return {"nodes": [{"agent": name, "steps": steps.get(name, 0)} for name in names], "edges": edges}
