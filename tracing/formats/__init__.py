"""The trace format registry: one module per format, each exporting ``FORMAT``.

Adding a format is one new module and one line in ``_MODULES``.
"""

from __future__ import annotations

from importlib import import_module

from .base import (
    ParsedAgent,
    ParsedGold,
    ParsedLabels,
    ParsedStep,
    ParsedTrace,
    Source,
    TraceFormat,
    TraceFormatError,
)

__all__ = [
    "ParsedAgent",
    "ParsedGold",
    "ParsedLabels",
    "ParsedStep",
    "ParsedTrace",
    "Source",
    "TraceFormat",
    "TraceFormatError",
    "all_formats",
    "detect_format",
    "detect_format_scored",
    "get_format",
]

_MODULES = [
    # Who&When and AgentRx / tau-bench (benchmark datasets)
    "whowhen",
    "whowhen_jsonl",
    "agentrx_magentic",
    "agentrx_labels",
    "taubench",
    "mast",
    # span trees and observability exports
    "trail",
    "trail_labels",
    "otlp_json",
    "otel_span_attributes",
    "phoenix",
    "langfuse",
    "langfuse_chatml",
    "langsmith",
    # chat transcripts
    "openai_chat",
    "autogen_messages",
    "langchain_messages",
    # framework run logs (JSON or text)
    "crewai_log",
    # raw text logs, the generic fallback last
    "text_magentic",
    "text_ag2",
    "text_chatdev",
    "text_metagpt",
    "text_openmanus",
    "text_appworld",
    "text_crewai",
    "text_smolagents",
    "text_generic",
]

# Below this confidence a guess is not trusted; the person is asked to pick the format instead.
MIN_CONFIDENCE = 0.5


def all_formats() -> list[TraceFormat]:
    return [import_module(f"{__name__}.{module}").FORMAT for module in _MODULES]


def get_format(name: str) -> TraceFormat:
    for fmt in all_formats():
        if fmt.name == name:
            return fmt
    known = ", ".join(f.name for f in all_formats())
    raise TraceFormatError(f"unknown format {name!r} (known formats: {known})")


def detect_format(source: Source) -> TraceFormat:
    return detect_format_scored(source)[0]


def detect_format_scored(source: Source) -> tuple[TraceFormat, float]:
    """The most confident format for ``source`` and its confidence, or a TraceFormatError saying why none fits."""
    if source.size == 0 or not source.head.strip():
        raise TraceFormatError("the file is empty")
    if b"\x00" in source.head[:4096]:
        if _is_utf16_text(source.head[:4096]):
            raise TraceFormatError("UTF-16 text: save it as UTF-8")
        raise TraceFormatError(
            "binary data, not a JSON or text trace (a zip must end in .zip or start with PK)"
        )
    scored = sorted(((_safe_detect(fmt, source), fmt) for fmt in all_formats()), key=lambda pair: -pair[0])
    best_score, best = scored[0]
    if best_score >= MIN_CONFIDENCE:
        return best, best_score
    closest = _closest(best, best_score, source)
    if source.head_text()[:1] in ("{", "["):
        document = source.json()  # a syntax error or truncation is the more useful message
        raise TraceFormatError(f"JSON of an unknown shape ({describe_shape(document)}){closest}")
    raise TraceFormatError(f"not JSON and not a recognised trace format{closest}")


# A format that scored at least this, though too little to claim the file, is named as the closest with its reader's
# own complaint.
CLOSEST_AT = 0.1
# The top-level keys that say which format a JSON object meant to be (its detector may still score it 0: a Who&When
# file whose history is not a list). That format's reader then says what is wrong.
_KEY_HINTS = {
    "history": "whowhen",
    "resourceSpans": "otlp-json",
    "observations": "langfuse",
    "trajectory_id": "agentrx-labels",
    "traj": "taubench",
    "spans": "trail",
    "post": "langsmith",
    "patch": "langsmith",
}


def _closest(best: TraceFormat, score: float, source: Source) -> str:
    """ "; it looks like X, whose reader says: …" when one format came near (by its score, or by a top-level key that
    only it uses), else where to find the list of formats (twenty-odd names in red helped no one)."""
    candidate = _hinted(source) or (best if score >= CLOSEST_AT else None)
    if candidate is not None:
        try:
            next(iter(candidate.parse(source)), None)
        except TraceFormatError as exc:
            return f"; it looks like {candidate.label}, whose reader says: {exc}"
        except Exception:  # a reader that fails otherwise names no reason worth showing
            return f"; it looks most like {candidate.label}"
        return f"; it looks most like {candidate.label} (choose that format to import it as one)"
    return f"; none of the {len(all_formats())} formats Culprit reads fits (the upload page lists them)"


def _hinted(source: Source) -> TraceFormat | None:
    if source.head_text()[:1] != "{":
        return None
    try:
        document = source.json()
    except TraceFormatError:
        return None
    if not isinstance(document, dict):
        return None
    hinted = next((_KEY_HINTS[key] for key in document if key in _KEY_HINTS), None)
    return get_format(hinted) if hinted else None


def _is_utf16_text(head: bytes) -> bool:
    """Text saved as UTF-16 (Windows' "Unicode"), with or without a byte-order mark: it decodes cleanly, and holds
    printable characters only, many of them ASCII (JSON and logs are mostly ASCII; random bytes are not)."""
    for bom, encoding in ((b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")):
        if head.startswith(bom):
            head, encodings = head[2:], [encoding]
            break
    else:
        encodings = ["utf-16-le", "utf-16-be"]
    sample = head[: len(head) // 2 * 2]
    for encoding in encodings:
        try:
            text = sample.decode(encoding)
        except UnicodeDecodeError as exc:
            if exc.start < len(sample) - 4:  # only a surrogate pair cut in two at the end is forgiven
                continue
            text = sample[: exc.start].decode(encoding)
        if not text or "\x00" in text or not all(c.isprintable() or c in "\t\r\n" for c in text):
            continue
        if sum(c < "\x80" for c in text) * 2 >= len(text):
            return True
    return False


def _safe_detect(fmt: TraceFormat, source: Source) -> float:
    # A detector must never take the import down; one that raises simply does not claim the file.
    try:
        return float(fmt.detect(source))
    except Exception:  # noqa: BLE001
        import logging

        logging.getLogger(__name__).exception("format %s raised in detect() on %s", fmt.name, source.name)
        return 0.0


def describe_shape(document: object) -> str:
    if isinstance(document, dict):
        if not document:
            return "an empty object"
        keys = ", ".join(list(map(str, document))[:8])
        return f"an object with keys {keys}"
    if isinstance(document, list):
        return f"a list of {len(document)} item(s)"
    return f"a bare {type(document).__name__}"
