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
import sys
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from .methods.base import TraceView

if TYPE_CHECKING:
    import networkx as nx

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
# The same matches, found faster (every step of the Who&When runs: 0.13 s against 0.45 s for ``_TOKEN`` read in one
# pass, and 0.31 s for the single tuned regex this replaced). ``re`` skips ahead to where a match can start only when
# the whole pattern starts with one character class; ``_TOKEN``'s branches do not share one, so it tries every branch
# at every character. ``tokens_of`` runs two searches that start with a class of characters rare in prose instead:
# - ``_SEARCH``: URLs (starting with h or f), quoted strings, numbers, and the features that make a word code-like
#   (an underscore, a lower-case letter before a capital, a letter next to a digit: one of _0-9A-Z). Each branch
#   checks which character it started with by a look-behind. A feature is taken with the rest of its word, and the
#   identifier starts where the run of identifier characters before the feature does, found by reading the text
#   backwards (``re`` has no look-behind of variable length). Nothing else can start inside such a run, and whatever
#   these branches take that contains a feature (a URL, a quoted string, a number glued to letters) contains its
#   whole word or makes it start with a digit: one search finds both without hiding a match from the other. A text
#   without "://" is searched without the URL branch (h and f are where most of its attempts would start).
# - ``_DOT_EXTENSION`` finds a file name by its extension; the name starts where the run of word characters and
#   dashes before the dot does, read backwards the same way.
# ``tokens_of`` merges the two as one pass of ``_TOKEN`` would: the leftmost match wins, a file name beats a number
# starting at the same place (``_TOKEN``'s order), and a match starting inside one already taken is dropped. What
# this cannot see is a URL starting inside a word ("Visithttp://x"): whether ``_TOKEN`` takes it depends on whether
# the identifier branch swallowed the word first, so a text with one is read with ``_TOKEN`` itself (18 of the 2,795
# Who&When steps).
_EXTENSION = (
    r"(?:py|csv|json|jsonl|txt|pdf|xlsx?|docx?|pptx?|md|html?|xml|ya?ml|ipynb|sh|js|ts|zip|png|jpe?g|gif|mp[34]|wav"
    r"|pdb|gff3|gz|tsv|log|sql|db)"
)
_URL = r"""(?P<url>(?<=h)ttps?://[^\s<>"'`)\]]+ | (?<=f)tp://[^\s<>"'`)\]]+) |"""
# The "code" branch also checks, from the feature on, what it can of the identifier branch: six characters or more
# and a word boundary at the end (no non-ASCII letter after).
_OTHER_BRANCHES = r"""
        (?<=")(?<![\w']")(?P<dq>[^"'`\n]{3,80}?)"(?![\w'])
      | (?<=')(?<![\w']')(?P<sq>[^"'`\n]{3,80}?)'(?![\w'])
      | (?<=`)(?<![\w']`)(?P<bq>[^"'`\n]{3,80}?)`(?![\w'])
      | (?<=\d)(?<![\w.]\d)(?P<number>\d{0,2}(?:,\d{3})+(?:\.\d+)?(?!\d) | \d*\.\d+(?!\d|\.\d) | \d+(?!\d))
      | (?P<code>(?:(?<=_)|(?<=[a-z][A-Z])|(?<=[A-Za-z][0-9])|(?<=[0-9])(?=[A-Za-z]))
                 [A-Za-z0-9_]*+(?<=[A-Za-z0-9_]{6})(?!\w))"""
_SEARCH = re.compile(r"""[hf"'`\d_A-Z](?:""" + _URL + _OTHER_BRANCHES + ")", re.VERBOSE)
_SEARCH_WITHOUT_URLS = re.compile(r"""["'`\d_A-Z](?:""" + _OTHER_BRANCHES + ")", re.VERBOSE)
_URL_IN_WORD = re.compile(r"://(?:(?<=\whttp://)|(?<=\whttps://)|(?<=\wftp://))")
_DOT_EXTENSION = re.compile(r"\." + _EXTENSION + r"\b")
_FILE = re.compile(r"[\w\-](?<=\b[\w\-])[\w\-]*+\." + _EXTENSION + r"\b")
_FILE_CHARS = re.compile(r"[\w\-]*+")
_IDENT_CHARS = re.compile(r"[A-Za-z0-9_]*+")
_ALNUM = re.compile(r"[^\W_]")  # a letter or digit: what str.isalnum accepts, one character at a time
_CODE_LIKE = re.compile(r"_|[a-z][A-Z]|[A-Za-z]\d|\d[A-Za-z]")
# A token seen in more steps than this share of the trace (and in more than this many steps) is background: a site's
# name on every page, the keys of Magentic-One's progress ledger (in a quarter of its steps). Short runs (AG2, ten
# steps) are never cut.
_BACKGROUND_SHARE = 0.2
_BACKGROUND_MIN_STEPS = 6
_MAX_TOKEN_LENGTH = 200
_NO_FILE = (sys.maxsize, sys.maxsize)  # after the last file name: starts after everything
_THOUSANDS = re.compile(r"\d{1,3}(?:,\d{3})+")


def canonical_number(number: str) -> str:
    """A number as the value it states, so that a restatement is the same token: thousands separators dropped, and
    a decimal part's trailing zeros ("1,814,443", "1814443.0" and "1814443.00" are one value; "2.50" is "2.5").
    Anything else (a version "1.2.0", a list "1,2") is left as written."""
    whole, dot, fraction = number.partition(".")
    if "," in whole and _THOUSANDS.fullmatch(whole):
        whole = whole.replace(",", "")
    if dot and fraction.isdigit():
        fraction = fraction.rstrip("0")
        return f"{whole}.{fraction}" if fraction else whole
    return whole + dot + fraction


def tokens_of(text: str) -> Iterator[str]:
    """The distinctive tokens of ``text``, normalised (numbers as ``canonical_number`` writes them, URLs without
    trailing punctuation), in order, repeats included: the matches of ``_TOKEN``, found faster (see above)."""
    if "://" in text:
        if _URL_IN_WORD.search(text):
            yield from _tokens_of_slowly(text)
            return
        search = _SEARCH
    else:
        search = _SEARCH_WITHOUT_URLS
    n = len(text)
    backwards = text[::-1]
    files = _file_names(text, backwards, 0)
    file = next(files, _NO_FILE)
    position = 0  # where the last match taken ends
    matches = search.finditer(text)
    while True:
        for match in matches:
            kind = match.lastgroup
            if kind == "code":
                start = n - _IDENT_CHARS.match(backwards, n - match.start()).end()
                # The identifier branch's other conditions: a word boundary before, not a digit first.
                if text[start] <= "9" or (start and text[start - 1].isalnum()):
                    continue
            else:
                start = match.start()
            # A file name starting where another match does starts with a number ("2023.csv"), and wins.
            while file[0] <= start:
                if file[0] >= position:
                    if file[1] - file[0] <= _MAX_TOKEN_LENGTH:
                        yield text[file[0] : file[1]]
                    position = file[1]
                elif file[1] > position:
                    # It straddles the end of the match taken: search again from there, as below.
                    files = _file_names(text, backwards, position)
                file = next(files, _NO_FILE)
            if start < position:  # inside the match taken last
                if kind == "code" or match.end() <= position:
                    continue
                # It straddles the end of the match taken, so the search may have stepped over a match starting
                # there: search again from there. (An identifier's word cannot hide a match: nothing else starts
                # inside one. And searching again for it would find it again, starting before ``position``.)
                matches = search.finditer(text, position)
                break
            position = match.end()
            if kind == "code":
                token = text[start:position]
            elif kind == "number":
                token = canonical_number(match[0])
            elif kind == "url":
                token = match[0].rstrip(".,;:!?")
            else:
                token = match[kind].strip()
                if len(token) < 3 or not _ALNUM.search(token):
                    continue
            if len(token) <= _MAX_TOKEN_LENGTH:
                yield token
        else:
            break
    while file is not _NO_FILE:
        if file[0] >= position:
            if file[1] - file[0] <= _MAX_TOKEN_LENGTH:
                yield text[file[0] : file[1]]
            position = file[1]
        elif file[1] > position:
            files = _file_names(text, backwards, position)
        file = next(files, _NO_FILE)


def _file_names(text: str, backwards: str, position: int) -> Iterator[tuple[int, int]]:
    """The file branch's matches from ``position`` on. A name runs back from its extension over word characters and
    dashes; it starts at the first of those that follows a word boundary, which is the first one unless the run
    starts with a dash (or before ``position``)."""
    n = len(text)
    while (dot := _DOT_EXTENSION.search(text, position)) is not None:
        run_start = n - _FILE_CHARS.match(backwards, n - dot.start()).end()
        # Bounded one past the extension: the boundary after it is read, and no other name fits in.
        file = _FILE.search(text, max(run_start, position), dot.end() + 1)
        if file is None:
            position = dot.start() + 1  # a name may still start inside the extension: ".py.csv"
        else:
            yield file.span()
            position = file.end()


def _tokens_of_slowly(text: str) -> Iterator[str]:
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
            token = canonical_number(match["number"])
        else:
            token = match["ident"]
            if not _CODE_LIKE.search(token):
                continue  # plain words ("because", "results") are not identifiers
        if len(token) <= _MAX_TOKEN_LENGTH:
            yield token


@dataclass(frozen=True)
class Dependencies:
    """The edges ``ancestors`` follows, as plain pairs: what the heuristic needs without the cost of a graph
    object (it only counts reachability; the pages draw the graph ``build_graph`` makes of the same pairs)."""

    producers: list[tuple[int, int]]  # (step, the step it came out of)
    uses: list[tuple[int, int, str]]  # (first step with a token, later step repeating it, token)

    def ancestors(self, i: int) -> set[int]:
        """``ancestors(build_graph(trace), i)`` without building the graph."""
        sources: dict[int, list[int]] = {}
        for step, producer in self.producers:
            sources.setdefault(step, []).append(producer)
        for source, target, _ in self.uses:
            sources.setdefault(target, []).append(source)
        found: set[int] = set()
        queue = deque([i])
        while queue:
            for source in sources.get(queue.popleft(), ()):
                if source not in found:
                    found.add(source)
                    queue.append(source)
        found.discard(i)
        return found


def dependencies(trace: TraceView) -> Dependencies:
    return Dependencies(producers=list(_producers(trace)), uses=list(_uses(trace)))


def build_graph(trace: TraceView, deps: Dependencies | None = None) -> nx.DiGraph:
    """The graph of ``trace`` (``deps``: its dependencies when already computed, to skip reading the text again)."""
    import networkx as nx

    deps = deps or dependencies(trace)
    graph = nx.DiGraph()
    for step in trace.steps:
        graph.add_node(step.index, agent=step.agent, kind=step.kind)
    for step in trace.steps[1:]:
        _add_edge(graph, step.index - 1, step.index, "order")
    for step, producer in deps.producers:
        _add_edge(graph, producer, step, "parent")
    for source, target, token in deps.uses:
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


# Runs of one team share their system prompts (and a re-run its question): reading those once is a fifth of the
# token reading of a Who&When run. 256 prompts of a few kB each.
@lru_cache(maxsize=256)
def _token_set(text: str) -> frozenset[str]:
    return frozenset(tokens_of(text))


def _uses(trace: TraceView) -> Iterator[tuple[int, int, str]]:
    """(first step with a token, later step repeating it, token), each pair once, in one pass over the tokens."""
    given = set(_token_set(trace.question)) | set(trace.agents)
    given.update(
        name for step in trace.steps for name in (step.agent, step.recipient, step.tool_name) if name
    )
    for prompt in trace.system_prompts.values():
        given.update(_token_set(prompt))
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
    return [
        f"step {i} uses '{graph.edges[j, i]['via']}' from step {j}"
        for j in sorted(graph.predecessors(i))
        if "uses" in graph.edges[j, i]["kinds"]
    ]


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
    edges = [
        {
            "source": a,
            "target": b,
            "handovers": handovers[a, b],
            "addressed": addressed[a, b],
            "count": handovers[a, b] + addressed[a, b],
        }
        for a, b in sorted({*handovers, *addressed}, key=lambda p: (names.index(p[0]), names.index(p[1])))
    ]
    return {"nodes": [{"agent": name, "steps": steps.get(name, 0)} for name in names], "edges": edges}


# --- drawing the agent graph (server-side SVG; the template only draws what is laid out here) ---------------------

LABEL_LINE_CHARS = (
    16  # a node's name wraps onto two lines of this many characters, then is abbreviated with "…"
)
MAX_DRAWN_AGENTS = 24  # past this the circle is unreadable; the rest are named in the legend as "+N more"


_LABEL_PIECE = re.compile(r".+?(?:[\s_\-]+|(?<=[a-z0-9])(?=[A-Z])|$)")


def label_lines(name: str, width: int = LABEL_LINE_CHARS) -> list[str]:
    """``name`` on at most two lines of ``width`` characters, broken after spaces, underscores or dashes and between
    camel-case words ("MagenticOne" / "Orchestrator"), abbreviated with "…" when it does not fit (the full name is
    the node's tooltip)."""
    pieces = [p for p in _LABEL_PIECE.findall(name.strip()) if p] or [name]
    lines: list[str] = []
    current = ""
    for piece in pieces:
        if current and len((current + piece).rstrip()) > width:
            lines.append(current.rstrip())
            current = ""
            if len(lines) == 2:
                lines[-1] = lines[-1][: width - 1].rstrip() + "…"
                return lines
        current += piece
    lines.append(current.rstrip())
    return [line if len(line) <= width else line[: width - 1].rstrip() + "…" for line in lines][:2]


def agent_graph_layout(graph: dict, *, gold: str = "", blamed: str = "") -> dict:
    """Positions for ``agent_graph``'s agents on a circle that grows with their number, curved arrows (so a -> b and
    b -> a never overlap), wrapped labels and the blamed and gold agents marked. {} for fewer than two agents."""
    import math

    nodes = graph["nodes"][:MAX_DRAWN_AGENTS]
    if len(nodes) < 2:
        return {}
    n = len(nodes)
    radius = max(70, round(n * 95 / (2 * math.pi)) + 30)  # ~95 px of arc per agent keeps labels apart
    margin_x, margin_y = 80, 52  # room for two label lines under the bottom node and beside the side ones
    width, height = 2 * (radius + margin_x), 2 * (radius + margin_y)
    cx, cy = width / 2, height / 2
    if n == 2:  # two agents side by side read better than top and bottom
        width, height, cx, cy = 2 * radius + 2 * margin_x, 150, radius + margin_x, 60
    position = {}
    for i, node in enumerate(nodes):
        angle = (math.pi if n == 2 else -math.pi / 2) + 2 * math.pi * i / n
        position[node["agent"]] = (cx + radius * math.cos(angle), cy + radius * math.sin(angle))
    top = max((e["count"] for e in graph["edges"]), default=1) or 1
    edges = [
        _curve(e, position, top)
        for e in graph["edges"]
        if e["source"] in position and e["target"] in position
    ]
    drawn = [
        {
            **node,
            "x": round(position[node["agent"]][0]),
            "y": round(position[node["agent"]][1]),
            "lines": label_lines(node["agent"]),
            "blamed": node["agent"] == blamed,
            "gold": node["agent"] == gold,
        }
        for node in nodes
    ]
    return {
        "nodes": drawn,
        "edges": edges,
        "width": round(width),
        "height": round(height),
        "hidden": len(graph["nodes"]) - n,
        "gold": gold,
        "blamed": blamed,
    }


NODE_RADIUS = 20


def _curve(edge: dict, position: dict, top: int) -> dict:
    """A quadratic curve from source to target bending to its left: the reverse edge bends the other way."""
    import math

    (x1, y1), (x2, y2) = position[edge["source"]], position[edge["target"]]
    length = math.hypot(x2 - x1, y2 - y1) or 1
    ux, uy = (x2 - x1) / length, (y2 - y1) / length
    bend = min(40.0, 0.18 * length)
    mx, my = (x1 + x2) / 2 - uy * bend, (y1 + y2) / 2 + ux * bend
    # Start and end on the circles' rims, aimed at the control point, so the arrow head is not under the node.
    sx, sy = _towards(x1, y1, mx, my, NODE_RADIUS + 2)
    ex, ey = _towards(x2, y2, mx, my, NODE_RADIUS + 4)
    return {
        **edge,
        "path": f"M{sx:.0f},{sy:.0f} Q{mx:.0f},{my:.0f} {ex:.0f},{ey:.0f}",
        "width": round(1 + 4 * edge["count"] / top, 1),
    }


def _towards(x: float, y: float, tx: float, ty: float, distance: float) -> tuple[float, float]:
    import math

    length = math.hypot(tx - x, ty - y) or 1
    return x + (tx - x) / length * distance, y + (ty - y) / length * distance
