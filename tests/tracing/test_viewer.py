"""The trace page: span tree and waterfall, per-step chips, run totals, LLM calls as chat, the root's final answer."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from tests.conftest import SHARED, import_now, incoming_path
from tracing.chat import chat_of
from tracing.models import ErrorLabel, Step, Trace
from tracing.plumbing import is_plumbing

pytestmark = pytest.mark.django_db

TRAIL = SHARED / "traces" / "trail" / "gaia" / "3215fc75e81bdb73706a4fb37b66427f.trace.json"


def _import(project, path) -> Trace:
    (job,) = import_now(project, incoming_path(path))
    assert job.trace_ids, job.error
    return Trace.objects.get(pk=job.trace_ids[0])


def _langgraph_path():
    from tests.conftest import ROOT

    return ROOT / "tests" / "fixtures" / "langfuse" / "langgraph-python-2025-08-22.trace.json"


def test_a_trail_trace_shows_a_nested_waterfall_with_durations(owner_client, project):
    trace = _import(project, TRAIL)
    html = owner_client.get(reverse("tracing:trace_detail", args=[trace.pk])).content.decode()
    assert 'class="waterfall card"' in html
    # Children nest under their parents: the root opens a subtree, its LLM calls sit one level deeper.
    assert re.search(
        r'<details open class="wf-tree"><summary class="wf-row depth-0[^"]*" data-step="0"', html
    )
    assert 'class="wf-row depth-1' in html and 'class="wf-row depth-2' in html
    # Durations on the rows and scaled bars (the root spans most of the run: its bar is wide).
    root_bar = re.search(r'data-step="0".*?<rect x="([\d.]+)" y="1" width="([\d.]+)"', html, re.S)
    assert root_bar and float(root_bar[2]) > 800
    assert re.search(r'<span class="wf-dur">\d+\.\d s</span>', html)


def test_every_labelled_step_is_marked_in_the_waterfall_with_its_category_and_the_decisive_one_stands_out(
    owner_client, project
):
    trace = _import(project, TRAIL)
    ErrorLabel.objects.filter(trace=trace).delete()  # only the labels written here
    ErrorLabel.objects.create(
        trace=trace,
        step_index=1,
        family="TRAIL",
        category="Tool-related",
        decisive=True,
        agent_name="x",
        position=0,
    )
    ErrorLabel.objects.create(
        trace=trace, step_index=2, family="", category="<b>raw & odd</b>", position=1, source="adjudicated"
    )
    html = owner_client.get(reverse("tracing:trace_detail", args=[trace.pk])).content.decode()
    waterfall = html[
        html.index('class="waterfall card"') : html.index("</aside>", html.index('class="waterfall card"'))
    ]
    first = waterfall[waterfall.index('data-step="1"') : waterfall.index('data-step="2"')]
    assert re.search(r'class="wf-row [^"]*labelled', waterfall)
    decisive = re.search(
        r'<span class="badge error-label wf-error decisive" title="([^"]*)">◆ ([^<]*)</span>', first
    )
    assert decisive and decisive[1] == "TRAIL: Tool-related (decisive)"
    assert (
        "Tool-related" in decisive[2] and decisive[2] != "Tool-related"
    )  # the human name, not the raw category
    second = waterfall[waterfall.index('data-step="2"') :]
    second = second[: second.index('data-step="3"')]
    assert (
        '<span class="badge error-label wf-error" title="&lt;b&gt;raw &amp; odd&lt;/b&gt; · adjudicated">'
        in second
    )
    assert "<b>raw" not in waterfall  # escaped everywhere
    unlabelled = waterfall[waterfall.index('data-step="3"') :]
    assert "wf-error" not in unlabelled[: unlabelled.index('data-step="4"')]


def test_steps_carry_latency_tokens_and_model_chips_and_the_header_has_totals(owner_client, project):
    trace = _import(project, TRAIL)
    html = owner_client.get(reverse("tracing:trace_detail", args=[trace.pk])).content.decode()
    llm = Step.objects.filter(trace=trace, kind="llm_call").order_by("index").first()
    item = html[html.index(f'id="step-{llm.index}"') :]
    item = item[: item.index("</li>\n")]
    assert f"{llm.input_tokens:,} in · {llm.output_tokens:,} out" in item
    assert '<span class="chip model" title="Model">o3-mini</span>' in item
    assert '<span class="chip latency" title="Latency">' in item
    totals = html[html.index('class="totals"') : html.index("</ul>", html.index('class="totals"'))]
    llm_calls = Step.objects.filter(trace=trace, kind="llm_call").count()
    assert f"LLM calls</span> <strong>{llm_calls}</strong>" in totals
    assert f"Steps</span> <strong>{trace.step_count}</strong>" in totals
    assert re.search(r"Duration</span> <strong>1 m \d\d s</strong>", totals)


def test_the_root_spans_output_is_the_final_answer_not_step_zero(owner_client, project):
    trace = _import(project, TRAIL)
    html = owner_client.get(reverse("tracing:trace_detail", args=[trace.pk])).content.decode()
    answer = html[
        html.index("<dt>Final answer</dt>") : html.index("</dd>", html.index("<dt>Final answer</dt>"))
    ]
    assert "0.1777" in answer
    assert "The run's root span" in html


def test_a_langfuse_llm_call_is_shown_as_chat_with_its_raw_json(owner_client, project):
    trace = _import(project, _langgraph_path())
    html = owner_client.get(reverse("tracing:trace_detail", args=[trace.pk])).content.decode()
    assert '<li class="msg role-user dir-in">' in html
    assert '<span class="msg-role">tool call</span> <code class="tool-name">Web-Search</code>' in html
    assert '<details class="raw-json"><summary>Raw JSON</summary>' in html
    assert (
        "additional_kwargs"
        not in html.split('<details class="raw-json">')[0].rsplit('<ol class="chat">', 1)[-1]
    )


def test_langgraph_plumbing_is_marked_so_the_toggle_hides_it(owner_client, project):
    trace = _import(project, _langgraph_path())
    html = owner_client.get(reverse("tracing:trace_detail", args=[trace.pk])).content.decode()
    routing = Step.objects.filter(trace=trace, speaker="should_continue").first()
    assert routing is not None
    assert re.search(rf'id="step-{routing.index}" class="step [^"]*plumbing', html)
    assert 'id="hide-plumbing" checked' in html


def test_the_plumbing_list_keeps_llm_and_tool_steps():
    assert is_plumbing(name="ChannelWrite<agent,messages>", step_kind="message")
    assert is_plumbing(name="RunnableSequence", step_kind="message")
    assert is_plumbing(name="Branch<agent>", step_kind="message")
    assert not is_plumbing(name="RunnableSequence", step_kind="llm_call")
    assert not is_plumbing(name="WebSurfer", step_kind="message")


def test_chat_reads_openinference_and_genai_parts_and_python_reprs():
    oi = {
        "span_attributes": {
            "llm.input_messages.0.message.role": "system",
            "llm.input_messages.0.message.content": "be brief",
            "llm.input_messages.1.message.role": "user",
            "llm.input_messages.1.message.content": "hi",
            "llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "search",
            "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": '{"q": 1}',
        }
    }
    assert [(m.role, m.text) for m in chat_of(oi)][:2] == [("system", "be brief"), ("user", "hi")]
    assert chat_of(oi)[2].tool_calls[0].name == "search"
    parts = {
        "input": "[{'role': 'user', 'parts': [{'type': 'text', 'content': 'joke?'}]}]",
        "output": '[{"role": "assistant", "parts": [{"type": "tool_call", "name": "pun", "arguments": "{}"}]}]',
    }
    messages = chat_of(parts)
    assert (messages[0].role, messages[0].text) == ("user", "joke?")
    assert messages[1].tool_calls[0].name == "pun"
    assert chat_of({"input": "__import__('os').system('true')"})[0].text.startswith("__import__")
    assert chat_of(None) == [] and chat_of({"foo": 1}) == []


def test_hostile_chat_content_is_escaped(owner_client, project):
    trace = _import(project, _langgraph_path())
    step = Step.objects.filter(trace=trace, kind="llm_call").first()
    step.raw = {**step.raw, "input": '[{"role": "user", "content": "<script>alert(1)</script>"}]'}
    step.save(update_fields=["raw"])
    html = owner_client.get(reverse("tracing:trace_detail", args=[trace.pk])).content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_a_long_trace_page_still_reads_one_window(owner_client, project, django_assert_max_num_queries):
    from tests.tracing.test_views import _big_trace

    trace = _big_trace(project, steps=3_000)
    # Windowed: the query count does not depend on the trace's length (and the waterfall is skipped for a flat log).
    with django_assert_max_num_queries(20):
        response = owner_client.get(reverse("tracing:trace_detail", args=[trace.pk]) + "?step=2500")
    assert response.status_code == 200
    assert 'id="step-2500"' in response.content.decode() and 'id="step-100"' not in response.content.decode()
