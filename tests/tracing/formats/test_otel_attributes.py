from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import SHARED
from tracing.formats.otel_attributes import (
    agent_name,
    build_span,
    exception_text,
    flatten_attributes,
    nested,
    span_kind,
    system_prompt,
    token_counts,
    unwrap_otlp_attributes,
    unwrap_otlp_value,
)
from tracing.formats.otel_traces import hex_id

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "openinference"


def attributes_sample(name: str) -> dict:
    """An attribute dictionary from shared/data (Arize-ai/openinference test fixtures), else its copy in tests/."""
    path = SHARED / "traces" / "openinference" / name
    return json.loads((path if path.exists() else FIXTURES / name).read_text())


def span_from(attributes: dict, name: str = "span"):
    return build_span(span_id="1", parent_id=None, name=name, attributes=flatten_attributes(attributes))


def as_otlp(attributes: dict) -> list[dict]:
    """The attribute dict as OTLP/JSON writes it, to prove unwrapping gives the same dict back."""

    def wrap(value):
        if isinstance(value, bool):
            return {"boolValue": value}
        if isinstance(value, int):
            return {"intValue": str(value)}  # OTLP/JSON writes 64-bit integers as strings
        if isinstance(value, float):
            return {"doubleValue": value}
        if isinstance(value, list):
            return {"arrayValue": {"values": [wrap(v) for v in value]}}
        return {"stringValue": value}

    return [{"key": key, "value": wrap(value)} for key, value in attributes.items()]


SAMPLES = [
    "openinference_client_span_tool_calls.json",
    "otel_genai_client_span_tool_calls.json",
    "otel_genai_tool_execution_span.json",
]


@pytest.mark.parametrize("name", SAMPLES)
def test_unwrapping_otlp_attributes_gives_the_plain_dictionary_back(name):
    attributes = attributes_sample(name)
    assert unwrap_otlp_attributes(as_otlp(attributes)) == attributes


def test_it_unwraps_every_otlp_value_type():
    items = [
        {"key": "s", "value": {"stringValue": "text"}},
        {"key": "i", "value": {"intValue": "9007199254740993"}},
        {"key": "d", "value": {"doubleValue": 0.5}},
        {"key": "b", "value": {"boolValue": False}},
        {"key": "a", "value": {"arrayValue": {"values": [{"stringValue": "x"}, {"intValue": 2}]}}},
        {
            "key": "kv",
            "value": {"kvlistValue": {"values": [{"key": "inner", "value": {"string_value": "y"}}]}},
        },
        {"key": "empty", "value": {}},
        {"no key": "ignored"},
    ]
    assert unwrap_otlp_attributes(items) == {
        "s": "text",
        "i": 9007199254740993,
        "d": 0.5,
        "b": False,
        "a": ["x", 2],
        "kv": {"inner": "y"},
        "empty": None,
    }
    assert unwrap_otlp_value({"intValue": "not a number"}) == "not a number"
    assert unwrap_otlp_attributes("not a list") == {}


def test_the_openinference_llm_span_gives_kind_tokens_and_texts():
    span = span_from(attributes_sample("openinference_client_span_tool_calls.json"))
    assert span.kind == "llm"
    assert (span.input_tokens, span.output_tokens) == (97, 52)
    assert span.output == "The weather in Paris is currently rainy with a temperature of 57°F."
    assert span.input.startswith("user: Weather in Paris?")
    assert '-> get_weather({"location": "Paris"})' in span.input
    assert "tool: rainy, 57°F" in span.input
    assert span.agent is None


def test_the_genai_llm_span_reads_the_same_as_its_openinference_twin():
    genai = span_from(attributes_sample("otel_genai_client_span_tool_calls.json"))
    openinference = span_from(attributes_sample("openinference_client_span_tool_calls.json"))
    assert genai.kind == "llm"
    assert (genai.input_tokens, genai.output_tokens) == (97, 52)
    assert (genai.input, genai.output) == (openinference.input, openinference.output)


def test_the_genai_tool_execution_span_gives_tool_name_arguments_and_result():
    span = span_from(
        attributes_sample("otel_genai_tool_execution_span.json"), name="execute_tool get_weather"
    )
    assert span.kind == "tool"
    assert span.tool_name == "get_weather"
    assert span.tool_arguments == {"city": "New York"}
    assert "sunny" in span.output
    assert token_counts(attributes_sample("otel_genai_tool_execution_span.json")) == (None, None)


@pytest.mark.parametrize(
    ("attributes", "kind"),
    [
        ({"openinference.span.kind": "LLM"}, "llm"),
        ({"openinference.span.kind": "TOOL"}, "tool"),
        ({"openinference.span.kind": "AGENT"}, "agent"),
        ({"openinference.span.kind": "CHAIN"}, "chain"),
        ({"openinference.span.kind": "RETRIEVER"}, "retriever"),
        ({"openinference.span.kind": "EMBEDDING"}, "embedding"),
        ({"gen_ai.operation.name": "chat"}, "llm"),
        ({"gen_ai.operation.name": "text_completion"}, "llm"),
        ({"gen_ai.operation.name": "execute_tool"}, "tool"),
        ({"gen_ai.operation.name": "invoke_agent"}, "agent"),
        ({"gen_ai.operation.name": "create_agent"}, "agent"),
        ({"traceloop.span.kind": "workflow"}, "chain"),
        ({"tool.name": "search"}, "tool"),
        ({"llm.model_name": "gpt-4o"}, "llm"),
        ({"agent.name": "Planner"}, "agent"),
        ({"http.method": "GET"}, "other"),
    ],
)
def test_it_reads_the_span_kind_from_either_convention(attributes, kind):
    assert span_kind(attributes) == kind


def test_a_kind_stated_outside_the_attributes_wins_unless_it_is_unknown():
    assert span_kind({"llm.model_name": "x"}, hint="TOOL") == "tool"
    assert span_kind({"llm.model_name": "x"}, hint="UNKNOWN") == "llm"


@pytest.mark.parametrize(
    ("attributes", "span_name", "agent"),
    [
        ({"agent.name": "Researcher"}, "whatever", "Researcher"),
        ({"gen_ai.agent.name": "Planner", "gen_ai.operation.name": "chat"}, "chat gpt-4o", "Planner"),
        ({"graph.node.id": "supervisor"}, "node", "supervisor"),
        ({"gen_ai.operation.name": "invoke_agent"}, "invoke_agent Writer", "Writer"),
        ({"openinference.span.kind": "AGENT"}, "Critic", "Critic"),
        ({"openinference.span.kind": "LLM"}, "ChatCompletion", None),
    ],
)
def test_it_finds_the_agent_a_span_names(attributes, span_name, agent):
    assert agent_name(attributes, kind=span_kind(attributes), span_name=span_name) == agent


def test_openinference_tool_spans_give_name_and_arguments_and_output():
    span = span_from(
        {
            "openinference.span.kind": "TOOL",
            "tool.name": "web_search",
            "tool.parameters": '{"type": "object"}',
            "input.value": '{"query": "Porto museums"}',
            "output.value": "3 results",
        }
    )
    assert (span.tool_name, span.tool_arguments, span.output) == (
        "web_search",
        {"query": "Porto museums"},
        "3 results",
    )


def test_tool_call_function_arguments_come_before_the_parameter_schema():
    span = span_from(
        {
            "tool_call.function.name": "lookup",
            "tool_call.function.arguments": '{"id": 7}',
            "tool.parameters": '{"type": "object"}',
        }
    )
    assert (span.kind, span.tool_name, span.tool_arguments) == ("tool", "lookup", {"id": 7})


def test_the_tool_schema_is_the_last_resort_for_arguments():
    span = span_from({"tool.name": "noop", "tool.parameters": '{"type": "object"}'})
    assert span.tool_arguments == {"type": "object"}


def test_the_system_prompt_comes_from_the_system_message_or_the_system_instructions():
    oi = {
        "llm.input_messages.0.message.role": "system",
        "llm.input_messages.0.message.content": "Be terse.",
        "llm.input_messages.1.message.role": "user",
        "llm.input_messages.1.message.content": "Hi",
    }
    assert system_prompt(oi) == "Be terse."
    genai = {
        "gen_ai.system_instructions": '[{"type": "text", "content": "You are Writer."}]',
        "gen_ai.system": "openai",
    }
    assert system_prompt(genai) == "You are Writer."
    assert system_prompt({"gen_ai.system": "openai"}) == ""  # the provider's name, not a prompt


def test_legacy_indexed_prompt_and_completion_keys_are_read():
    span = span_from(
        {
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4",
            "gen_ai.prompt.0.role": "system",
            "gen_ai.prompt.0.content": "Be kind.",
            "gen_ai.prompt.1.role": "user",
            "gen_ai.prompt.1.content": "Hello?",
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.content": "Hello!",
            "gen_ai.usage.prompt_tokens": 12,
            "gen_ai.usage.completion_tokens": "3",
        }
    )
    assert span.kind == "llm"
    assert span.output == "Hello!"
    assert span.input == "system: Be kind.\n\nuser: Hello?"
    assert span.system_prompt == "Be kind."
    assert (span.input_tokens, span.output_tokens) == (12, 3)


def test_message_events_of_the_older_genai_convention_give_the_texts():
    events = [
        {"name": "gen_ai.user.message", "attributes": {"content": "What time is it?"}},
        {"name": "gen_ai.choice", "attributes": {"message.content": "Noon.", "index": 0}},
    ]
    span = build_span(
        span_id="1", parent_id=None, name="chat", events=events, attributes={"gen_ai.operation.name": "chat"}
    )
    assert (span.input, span.output) == ("What time is it?", "Noon.")


def test_nested_attributes_flatten_to_the_dotted_keys_and_back():
    stored = {
        "llm": {
            "input_messages": [{"message": {"role": "user", "content": "Hi"}}],
            "token_count": {"prompt": 5},
        },
        "tag": {"tags": ["a", "b"]},
    }
    flat = flatten_attributes(stored)
    assert flat == {
        "llm.input_messages.0.message.role": "user",
        "llm.input_messages.0.message.content": "Hi",
        "llm.token_count.prompt": 5,
        "tag.tags": ["a", "b"],
    }
    assert nested(flat, "llm.input_messages") == [{"message": {"role": "user", "content": "Hi"}}]
    assert nested({"x": '[{"a": 1}]'}, "x") == [{"a": 1}]
    assert nested({"a.b": 1, "a.b.c": 2}, "a") == {"b": 1}  # a key that is also a prefix keeps its value


def test_exception_events_give_type_and_message():
    events = [
        {"name": "log", "attributes": {}},
        {"name": "exception", "attributes": {"exception.type": "TimeoutError", "exception.message": "5 s"}},
    ]
    assert exception_text(events) == "TimeoutError: 5 s"
    assert exception_text([], {"exception.message": "boom"}) == "boom"
    assert exception_text([]) == ""


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("5B8EFFF798038103D269B633813FC60C", "5b8efff798038103d269b633813fc60c"),
        ("W47/95gDgQPSabYzgT/GDA==", "5b8efff798038103d269b633813fc60c"),
        ("7uGbfsPBsXQ=", "eee19b7ec3c1b174"),
        ("EEE19B7EC3C1B174", "eee19b7ec3c1b174"),
        ("", ""),
        (None, ""),
        ("run-42", "run-42"),
    ],
)
def test_ids_are_normalised_to_lowercase_hex(raw, expected):
    assert hex_id(raw) == expected


def test_content_parts_of_several_shapes_become_text():
    span = span_from(
        {
            "llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.contents.0.message_content.type": "text",
            "llm.output_messages.0.message.contents.0.message_content.text": "Part one.",
            "llm.output_messages.0.message.contents.1.message_content.type": "image",
            "llm.output_messages.0.message.contents.1.message_content.image.image.url": "x.png",
        }
    )
    assert span.output == "Part one.\n[image]"
