"""The trace page's other long texts (issue 13): an LLM step's raw JSON and the run's final answer are read only up to
CULPRIT_STEP_PREVIEW_CHARS into the page, and "Show all" fetches the rest in windows (``part=raw``, ``part=answer``),
escaped, for members of the trace's project only."""

from __future__ import annotations

import html
import json
import re

import pytest
from django.urls import reverse

from tests.conftest import import_now, incoming_path
from tests.tracing.test_viewer import _langgraph_path
from tracing.long_text import pretty_json
from tracing.models import Step, Trace

pytestmark = pytest.mark.django_db

PREVIEW = 20_000  # CULPRIT_STEP_PREVIEW_CHARS
HOSTILE = "<script>window.__pwned = 1</script>"


def numbered(prefix: str, size: int) -> str:
    """``size`` characters of numbered lines, with markup past the preview that must come back escaped."""
    lines = [f"{prefix}{i:07d}" + "z" * (92 - len(prefix)) + "\n" for i in range(size // 100)]
    lines[PREVIEW // 100 + 5] = f"{prefix}{HOSTILE}" + "z" * (99 - len(prefix) - len(HOSTILE)) + "\n"
    return "".join(lines)


@pytest.fixture
def long_trace(project) -> tuple[Trace, Step, str, str]:
    """A LangGraph run (30 kB as a page) whose first LLM step carries a 3 MB raw record (one message of it 200 kB)
    and whose final answer (the root span's ``output.value``) is 1 MB."""
    (job,) = import_now(project, incoming_path(_langgraph_path()))
    trace = Trace.objects.get(pk=job.trace_ids[0])
    root = Step.objects.get(trace=trace, index=0)
    answer = numbered("answer", 1_000_000)
    root.raw["span_attributes"] = {"output.value": answer}
    root.save(update_fields=["raw"])
    llm = Step.objects.filter(trace=trace, kind="llm_call").order_by("index").first()
    llm.raw["input"] = json.dumps([{"role": "user", "content": numbered("message", 200_000)}])
    llm.raw["blob"] = numbered("raw", 2_800_000)
    llm.save(update_fields=["raw"])
    return trace, llm, answer, pretty_json(Step.objects.get(pk=llm.pk).raw)  # in the order the database keeps


def window(client, trace: Trace, index: int, part: str, offset: int):
    url = reverse("tracing:step_content", args=[trace.pk, index])
    return client.get(url, {"part": part, "offset": offset})


def window_text(response) -> str:
    assert response.status_code == 200
    return html.unescape(
        re.search(r'<pre class="content step-window">(.*?)</pre>', response.content.decode(), re.S)[1]
    )


def test_the_trace_page_stays_small_with_a_huge_raw_record_and_answer(owner_client, long_trace):
    trace, llm, answer, raw = long_trace
    response = owner_client.get(reverse("tracing:trace_detail", args=[trace.pk]))
    page = response.content.decode()
    print(
        f"trace page with a {len(raw):,}-character raw record, a {len(answer):,}-character answer: {len(page):,}"
    )
    assert response.status_code == 200 and len(response.content) < 300_000, len(response.content)
    final = page[
        page.index("<dt>Final answer</dt>") : page.index("</dd>", page.index("<dt>Final answer</dt>"))
    ]
    assert html.escape(answer[:PREVIEW]) in final and f"Show all ({len(answer)} characters)" in final
    assert f"?part=answer&amp;offset={PREVIEW}" in final
    assert f"answer{PREVIEW // 100 + 1:07d}" not in page  # past the preview: never read from the database
    start = page.index(f'id="step-{llm.index}"')
    item = page[start : page.index('<li id="step-', start)]
    shown = re.search(
        r'<details class="raw-json"><summary>Raw JSON</summary><pre class="content">(.*?)</pre>', item, re.S
    )
    assert html.unescape(shown[1]) == raw[:PREVIEW]
    assert f"Show all ({len(raw)} characters)" in item and f"?part=raw&amp;offset={PREVIEW}" in item
    assert f"raw{PREVIEW // 100 + 10:07d}" not in page
    assert "(180000 more characters in Raw JSON)" in item  # the 200 kB message, cut at the preview
    assert HOSTILE not in page


def test_the_windows_return_the_rest_escaped(owner_client, long_trace):
    trace, llm, answer, raw = long_trace
    first = window(owner_client, trace, 0, "answer", PREVIEW)
    assert window_text(first) == answer[PREVIEW : PREVIEW + 200_000]
    assert HOSTILE not in first.content.decode() and html.escape(HOSTILE) in first.content.decode()
    assert f"?part=answer&amp;offset={PREVIEW + 200_000}" in first.content.decode()
    last = window(owner_client, trace, 0, "answer", len(answer) - 1_000)
    assert window_text(last) == answer[-1_000:] and "data-step-window" not in last.content.decode()
    raw_first = window(owner_client, trace, llm.index, "raw", PREVIEW)
    assert window_text(raw_first) == raw[PREVIEW : PREVIEW + 200_000]
    assert f"?part=raw&amp;offset={PREVIEW + 200_000}" in raw_first.content.decode()
    hostile_at = raw.index(HOSTILE)
    around = window(owner_client, trace, llm.index, "raw", hostile_at - 10).content.decode()
    assert HOSTILE not in around and html.escape(HOSTILE) in around


def test_the_window_view_refuses_a_bad_part_and_strangers(client, owner_client, long_trace, make_user):
    trace, llm, _, _ = long_trace
    response = window(owner_client, trace, 0, "secrets", 0)
    assert response.status_code == 400 and b"part" in response.content
    assert window(owner_client, trace, 99_999, "raw", 0).status_code == 404
    client.force_login(make_user("stranger"))
    assert window(client, trace, llm.index, "raw", 0).status_code == 404
    assert window(client, trace, 0, "answer", 0).status_code == 404
