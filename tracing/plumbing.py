"""Which spans are framework plumbing: the viewer's "hide plumbing" toggle hides exactly these.

LangGraph and LangChain trace every runnable they wrap: channel writes, sequences, branches, the graph's own routing
functions. They carry no decision of any agent; a person reading the run wants the agents, the LLM calls and the
tools. The lists below are the whole rule, so what is hidden can be read here and extended in one place.

A step is plumbing when it is neither an LLM call nor a tool call/result, and its span name (``Step.speaker``, or
``tool_name`` when set) matches one of ``PLUMBING_NAMES`` exactly, starts with one of ``PLUMBING_PREFIXES``, or its
source span kind (Langfuse ``type`` / OpenInference ``openinference.span.kind``) is in ``PLUMBING_KINDS``.
"""

from __future__ import annotations

# Exact span names LangGraph/LangChain emit for their own machinery.
PLUMBING_NAMES = frozenset(
    {
        "ChannelWrite",
        "ChannelRead",
        "RunnableSequence",
        "RunnableParallel",
        "RunnableLambda",
        "RunnablePassthrough",
        "RunnableAssign",
        "RunnableBranch",
        "RunnableWithFallbacks",
        "RunnableBinding",
        "RunnableCallable",
        "Branch",
        "should_continue",
        "route",
        "router",
        "__start__",
        "__end__",
        "StateGraph",
        "CompiledStateGraph",
        "Pregel",
        "PregelNode",
        "ChatPromptTemplate",
        "PromptTemplate",
        "StrOutputParser",
        "JsonOutputParser",
        "PydanticOutputParser",
        "OpenAIToolsAgentOutputParser",
        "ToolsAgentOutputParser",
    }
)
# Prefixes: "ChannelWrite<agent,messages>", "Branch<agent,continue,end>", "RunnableSequence:x".
PLUMBING_PREFIXES = ("ChannelWrite", "ChannelRead", "Runnable", "Branch<", "Branch(", "__start__", "__end__")
# Span kinds that are plumbing whatever their name (OpenInference CHAIN spans of LangChain's own classes are named
# above; CHAIN in general is not plumbing, since agents' own steps are often CHAIN spans).
PLUMBING_KINDS = frozenset({"EVENT"})

_NEVER_PLUMBING_KINDS = frozenset({"llm_call", "tool_call", "tool_result"})


def is_plumbing(*, name: str, step_kind: str, span_kind: str = "") -> bool:
    """True when a step named ``name`` (of kind ``step_kind``, source span kind ``span_kind``) is framework plumbing."""
    if step_kind in _NEVER_PLUMBING_KINDS:
        return False
    name = (name or "").strip()
    if name in PLUMBING_NAMES or name.startswith(PLUMBING_PREFIXES):
        return True
    return (span_kind or "").upper() in PLUMBING_KINDS
