"""MAST / MAD records ("Why Do Multi-Agent LLM Systems Fail?", Cemri et al. 2025): framework logs wrapped in JSON.

The dataset ships the raw run of seven frameworks inside JSON records of a few shapes, singly, as a JSON list or as
JSON Lines::

    {"instance_id", "problem_statement": [lines], "other_data", "trajectory": [lines or messages]}   AG2, HyperAgent
    {"run_id", "prompt", "content": "<console log>", "timestamp", "cost", "log_file"}                MetaGPT
    {"mas_name", "llm_name", "benchmark_name", "trace_id", "trace": {…} | "…",
     "mast_annotation": {"1.1": 0 | 1, …, "3.3": 0 | 1}}                                            MAD dataset rows
    {"mas_name", "benchmark_name", "index", "trace_text": "…", "human_labels": {"1.1": 0 | 1, …},
     "human_label_summary": {"total_failures", "failures"}}                              human-labelled lists

The wrapped run is text (a list of lines is joined; a list of AG2 messages is printed the way AG2's console prints
them) and goes through the framework's own text reader: the one ``mas_name`` names when it recognises the text,
else the most confident one, the generic text-log reader last. MAST labels say which of its 14 failure modes a run
shows, not where: they go to ``metadata["failure_modes"]`` (``{"family": "MAST", "modes": [{code, name}]}``), and each
mode present becomes a trace-level error label (family "MAST", category "<code> <name>", no step, not decisive), with
``mas_name``, ``llm_name`` and ``benchmark_name`` beside them. A run no text reader can split into turns is kept
whole as one step, with a warning, so its labels are not lost.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .base import ParsedGold, ParsedStep, ParsedTrace, Source, TraceFormatError, json_text
from .jsonlines import peek, read_values
from .textlog import agents_in_order

# The 14 failure modes of MAST's final taxonomy (the paper's Figure 1); attribution/taxonomy.py codes them mast.N.M.
FAMILY = "MAST"
MAST_MODES = {
    "1.1": "Disobey task specification",
    "1.2": "Disobey role specification",
    "1.3": "Step repetition",
    "1.4": "Loss of conversation history",
    "1.5": "Unaware of termination conditions",
    "2.1": "Conversation reset",
    "2.2": "Fail to ask for clarification",
    "2.3": "Task derailment",
    "2.4": "Information withholding",
    "2.5": "Ignored other agent's input",
    "2.6": "Reasoning-action mismatch",
    "3.1": "Premature termination",
    "3.2": "No or incomplete verification",
    "3.3": "Incorrect verification",
}

# mas_name (case-folded, first word) -> the text reader of that framework's console output.
_READER_FOR = {
    "ag2": "text-ag2",
    "autogen": "text-ag2",
    "captainagent": "text-ag2",
    "chatdev": "text-chatdev",
    "metagpt": "text-metagpt",
    "magentic": "text-magentic",
    "magentic-one": "text-magentic",
    "magenticone": "text-magentic",
    "openmanus": "text-openmanus",
    "appworld": "text-appworld",
    "hyperagent": "text-log",
}
_TEXT_READERS = [
    "text-magentic",
    "text-ag2",
    "text-chatdev",
    "text-metagpt",
    "text-openmanus",
    "text-appworld",
]
_MARKERS = ('"mast_annotation"', '"human_labels"', '"mas_name"', '"trajectory"', '"log_file"')
_TEXT_KEYS = ("trajectory", "trace", "trace_text", "content", "text", "log", "messages", "history")


class Mast:
    name = "mast"
    label = "MAST / MAD records"

    def detect(self, source: Source) -> float:
        head = source.head_text()
        if head[:1] not in ("{", "[") or not any(marker in head for marker in _MARKERS):
            return 0.0
        peeked = peek(source)
        first = peeked[0] if peeked else None
        if isinstance(first, list):
            first = first[0] if first else None
        kind = record_kind(first)
        return {"dataset": 0.95, "trajectory": 0.9, "metagpt": 0.9}.get(kind or "", 0.0)

    def parse(self, source: Source) -> Iterator[ParsedTrace]:
        values, is_lines = read_values(source)
        position = 0
        for number, value in enumerate(values, start=1):
            for record in value if isinstance(value, list) else [value]:
                position += 1
                where = f"line {number}" if is_lines else f"record {position}"
                if record_kind(record) is None:
                    raise TraceFormatError(f"{where} is not a MAST record ({_shape(record)})")
                yield parse_record(record, where=where, file_name=source.name)


def record_kind(record: Any) -> str | None:
    """Which MAST shape ``record`` has: "dataset", "trajectory" (AG2, HyperAgent), "metagpt", or None."""
    if not isinstance(record, dict):
        return None
    if (
        "mast_annotation" in record
        or "human_labels" in record
        or ("mas_name" in record and ("trace" in record or "trace_text" in record))
    ):
        return "dataset"
    if "trajectory" in record and ("instance_id" in record or "problem_statement" in record):
        return "trajectory"
    if (
        isinstance(record.get("content"), str)
        and "prompt" in record
        and ("run_id" in record or "log_file" in record)
    ):
        return "metagpt"
    return None


def parse_record(record: dict[str, Any], *, where: str, file_name: str) -> ParsedTrace:
    text, question, metadata = _unwrap(record, where)
    mas = str(record.get("mas_name") or "")
    trace = _read_text(text, mas_name=mas, name=f"{file_name}#{where}")
    for key in ("mas_name", "llm_name", "benchmark_name", "round"):
        if record.get(key) not in (None, ""):
            metadata[key] = str(record[key])
    modes = failure_modes(record.get("mast_annotation", record.get("human_labels")))
    if modes is not None:
        metadata["failure_modes"] = {"family": "MAST", "modes": modes}
        # Each mode present is also a trace-level error label (no step, never decisive: MAST says what, not where).
        trace.gold = [
            *trace.gold,
            *(
                ParsedGold(
                    category=f"{m['code']} {m['name']}".strip(),
                    family=FAMILY,
                    decisive=False,
                    reason=f"MAST failure mode {m['code']} present in this run",
                )
                for m in modes
            ),
        ]
    if isinstance(record.get("human_label_summary"), (dict, str)):
        metadata["mast_label_summary"] = record["human_label_summary"]
    trace.metadata = {**trace.metadata, **metadata}
    trace.source_format = FORMAT.name  # the reader that split the text is kept in metadata["text_reader"]
    trace.question = (
        question.strip() or trace.question
    )  # the record states the task; the reader only guesses it
    trace.external_id = _record_id(record) or trace.external_id
    trace.name = _name(record, trace.external_id) or trace.name
    return trace


def failure_modes(labels: Any) -> list[dict[str, str]] | None:
    """``{"1.1": 1, "2.3": 0, …}`` -> the modes present, as ``[{code, name}]`` in taxonomy order; None when the
    record carries no labels. Votes may be 0/1, booleans or "yes"/"no"; a list of codes is read as present."""
    if isinstance(labels, list):
        present = {str(code).strip() for code in labels if isinstance(code, (str, int, float))}
    elif isinstance(labels, dict):
        present = {str(code).strip() for code, vote in labels.items() if _truthy(vote)}
    else:
        return None
    known = [code for code in MAST_MODES if code in present]
    unknown = sorted(code for code in present if code not in MAST_MODES)
    return [{"code": c, "name": MAST_MODES[c]} for c in known] + [{"code": c, "name": ""} for c in unknown]


def _truthy(vote: Any) -> bool:
    if isinstance(vote, str):
        return vote.strip().lower() in ("1", "yes", "true", "y")
    if isinstance(vote, bool):
        return vote
    return isinstance(vote, (int, float)) and vote > 0


def _unwrap(record: dict[str, Any], where: str) -> tuple[str, str, dict[str, Any]]:
    """(the run as text, the task, metadata) of any record shape; dataset rows may wrap another shape."""
    kind = record_kind(record)
    if kind == "trajectory":
        meta = {"instance_id": str(record.get("instance_id", ""))}
        return _as_text(record.get("trajectory"), where), _question(record.get("problem_statement")), meta
    if kind == "metagpt":
        meta = {
            k: record[k] for k in ("run_id", "timestamp", "cost", "log_file") if record.get(k) is not None
        }
        return record["content"], _question(record.get("prompt")), meta
    inner = record.get("trace", record.get("trace_text"))
    if isinstance(inner, dict) and record_kind(inner) in ("trajectory", "metagpt"):
        return _unwrap(inner, where)
    if isinstance(inner, dict):
        inner = next((inner[k] for k in _TEXT_KEYS if inner.get(k)), None)
    return _as_text(inner, where), "", {}


def _as_text(value: Any, where: str) -> str:
    """A run as text: strings as they are, lists of lines joined, AG2 messages printed as AG2's console does."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(_message_text(item) for item in value)
    if value is None:
        return ""
    raise TraceFormatError(
        f"{where}: the trace is a {type(value).__name__}, expected text or a list of lines"
    )


def _question(value: Any) -> str:
    if isinstance(value, list) and all(isinstance(line, str) for line in value):
        return "\n".join(value)
    return json_text(value)


def _message_text(item: Any) -> str:
    if isinstance(item, dict) and "content" in item:
        sender = str(item.get("name") or item.get("role") or "unknown")
        recipient = str(item.get("recipient") or "chat_manager")
        return f"{sender} (to {recipient}):\n\n{json_text(item['content'])}\n\n{'-' * 80}"
    return json_text(item)


def _read_text(text: str, *, mas_name: str, name: str) -> ParsedTrace:
    """The run through its framework's text reader; one whole-text step when no reader finds turns in it."""
    from . import get_format  # the registry imports this module

    if not text.strip():
        raise TraceFormatError(f"{name.rsplit('#', 1)[-1]}: the record holds no trace text")
    # NUL is not text (the text readers refuse it) and PostgreSQL cannot store it; U+FFFD keeps its place.
    source = Source.from_bytes(f"{name}.log", text.replace("\x00", "\ufffd").encode("utf-8"))
    hinted = _READER_FOR.get(mas_name.strip().casefold().split(" ")[0] if mas_name.strip() else "")
    candidates = list(dict.fromkeys([*([hinted] if hinted else []), *_TEXT_READERS, "text-log"]))
    for reader in candidates:
        fmt = get_format(reader)
        if fmt.detect(source) < 0.5:
            continue
        try:
            (trace, *_rest) = list(fmt.parse(source))
        except (TraceFormatError, ValueError):
            continue
        trace.metadata["text_reader"] = reader
        return trace
    return _whole(text, mas_name)


def _whole(text: str, mas_name: str) -> ParsedTrace:
    speaker = mas_name or "trace"
    step = ParsedStep(speaker=speaker, agent=None, kind="system", content=text)
    return ParsedTrace(
        name=speaker,
        source_format=FORMAT.name,
        steps=[step],
        agents=agents_in_order([step]),
        warnings=["no reader found speaker turns in this run's text: it is kept whole as one step"],
    )


def _record_id(record: dict[str, Any]) -> str:
    for key in ("trace_id", "index", "instance_id", "run_id"):
        value = record.get(key)
        if value not in (None, "") and not isinstance(value, (dict, list)):
            return str(value)[:200]
    inner = record.get("trace")
    return _record_id(inner) if isinstance(inner, dict) else ""


def _name(record: dict[str, Any], record_id: str) -> str:
    parts = [str(record[k]) for k in ("mas_name", "benchmark_name") if record.get(k)]
    if record_id:
        parts.append(f"#{record_id}" if parts else record_id)
    return " ".join(parts)[:300]


def _shape(value: Any) -> str:
    if isinstance(value, dict):
        return f"an object with keys {', '.join(list(map(str, value))[:6]) or 'none'}"
    return f"a {type(value).__name__}"


FORMAT = Mast()
