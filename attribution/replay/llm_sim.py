"""Counterfactual replay without the real system: a model role-plays the agents from the corrected step on.

For a real trace there is rarely a way to rerun the system that produced it (no sandbox, no replay hook), yet the
counterfactual question -- would the run have succeeded had this step been right? -- is the definition of the decisive
error. AgenTracer answers it with a model that plays the agents; this module does the same through the project's
``LlmClient`` (so the spending cap, the cache and the accounting apply):

- ``propose`` asks an analyzer for a minimal local fix of one step, from the task and the conversation up to it. It
  never sees the ground truth and is told not to reveal or guess the final answer.
- ``replay`` keeps every step before the first corrected one as recorded, substitutes the corrections, then plays
  each following agent from its recorded system prompt and the conversation so far (fenced as data). The recorded
  speaker order is followed while it lasts (a recorded human or system step is kept as it was: the simulator plays
  agents and tools, not people). Past it: a tool call is followed by the tool's simulated output and that by the
  caller; otherwise the agent the last step named in its ``next`` field acts, and when no step named one (a
  corrected step) the model is asked who acts next. Past the recording an agent may also choose to call a tool.
  The replay stops after a step that states a final answer (the step's ``final_answer`` field or a ``FINAL ANSWER:``
  line) or says ``TERMINATE``; at or past the recorded end, after an agent names nobody to act next; at
  ``max_new_steps``; or when the budget runs out mid-replay. A corrected step at the recorded end does not end the
  replay: in the recording it was the last word (often a premature final answer), corrected it usually is not, and
  somebody must react to it.
- The outcome is a normalised exact match of the final answer against the ground truth first (case, punctuation,
  whitespace, thousands separators and number forms ignored); otherwise an LLM judge that is shown the ground truth;
  ``unknown`` without a ground truth, when the judge cannot decide, or when the replay was cut short.

A simulation is not the real system: its outcomes depend on the model, no tool is really executed, and the judge has
its biases. docs/replay-and-injection.md says so to users.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..methods.base import MethodError, StepView, TraceView
from . import sim_prompts
from .base import Budget, BudgetExhausted, ReplayError, ReplayResult

if TYPE_CHECKING:
    from ..llm import LlmClient, Usage

DEFAULT_MAX_NEW_STEPS = 30
# Replays one replayer (one trace: ``replayer_for`` builds one per trace) may run. The counterfactual method's own
# default of 200 replays is sized for the free sandbox; a binary search needs about log2(actions) + 2 replays, and the
# single-step scan it falls back to on a 60-action trace would otherwise cost 60 simulated runs.
DEFAULT_MAX_REPLAYS = 24
# The judge sees the run's last steps only: the answer is stated at the end, and the whole run may not fit.
JUDGE_TAIL_STEPS = 6
# Tokens kept free besides the answer: the chat template's own tokens and counting differences between tokenizers.
MARGIN_TOKENS = 64
# Steps the simulator never plays: people and the system are not agents, and their words do not depend on a fix.
KEPT_KINDS = ("human", "system")
NOT_ACTIONS = ("tool_result", "human", "system")

# Possessive: neither "is" nor the colon starts with a space, so giving spaces back never helps, and trying to was
# quadratic in a long run of them.
_FINAL_LINE = re.compile(r"final\s++answer\s*+(?:is\s*+)?[:：]\s*(.+)", re.IGNORECASE)
_TERMINATE = re.compile(r"^\W*terminate\W*$", re.IGNORECASE)
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


# --- answers ------------------------------------------------------------------------------------------------------


def stated_answer(content: str) -> str:
    """The answer a step states on a ``FINAL ANSWER:`` line (the last one), "" when it states none."""
    found = _FINAL_LINE.findall(content or "")
    return found[-1].strip() if found else ""


def normalise_answer(text: str) -> str:
    """An answer reduced for exact matching: no "final answer:" prefix, case, punctuation, extra whitespace,
    thousands separators or trailing zeros of numbers."""
    s = stated_answer(text) or (text or "")
    s = _THOUSANDS.sub("", s.strip().lower())
    s = _NUMBER.sub(lambda m: _number_form(m.group(0)), s)
    s = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", s)  # a dot that is not a decimal point is punctuation
    s = re.sub(r"[^\w\s.-]|_", " ", s)
    s = re.sub(r"(?<![\w])-(?!\d)|(?<=\w)-(?=\s|$)", " ", s)  # a dash that is not a minus sign or a hyphen
    return " ".join(s.split())


def _number_form(token: str) -> str:
    value = float(token)
    return str(int(value)) if value.is_integer() else repr(value)


def answers_match(answer: str, truth: str) -> bool:
    a, b = normalise_answer(answer), normalise_answer(truth)
    return bool(a) and a == b


# --- the replayer -------------------------------------------------------------------------------------------------


class LlmSimulatedReplayer:
    """The ``Replayer`` for real traces with no replay hook: the project's model plays the agents."""

    name = "llm"

    def __init__(
        self,
        llm: LlmClient,
        *,
        max_new_steps: int = DEFAULT_MAX_NEW_STEPS,
        judge: bool = True,
        max_replays: int | None = DEFAULT_MAX_REPLAYS,
    ) -> None:
        if max_new_steps < 1:
            raise ValueError("max_new_steps must be at least 1")
        self.llm = llm
        self.max_new_steps = max_new_steps
        self.judge = judge
        self.max_replays = max_replays
        self.replays = 0
        # Usage already charged to a budget. ``propose`` takes no budget, so what the analyzer spends between two
        # replays is charged with the next replay: a budget then covers every call the replayer made.
        self._billed = self._built = llm.usage()

    def usage(self) -> Usage:
        """What the replayer's model calls (proposals, role-play, judge) cost since it was built."""
        return self.llm.usage() - self._built

    def __repr__(self) -> str:
        return f"LlmSimulatedReplayer({self.llm!r}, max_new_steps={self.max_new_steps}, judge={self.judge})"

    # -- propose --

    def propose(self, trace: TraceView, index: int) -> str:
        if not 0 <= index < len(trace.steps):
            raise ReplayError(f"step {index} is not in trace {trace.name!r} ({len(trace.steps)} steps)")
        step = trace.steps[index]
        if not step.agent or step.kind in NOT_ACTIONS:
            raise ReplayError(f"step {index} is not an agent's action and cannot be corrected")

        def validate(answer: dict[str, Any]) -> str | None:
            # The step may come back unchanged: correcting a sound step changes nothing, as in the sandbox.
            content = answer.get("content")
            if not isinstance(content, str) or not content.strip():
                return '"content" must be the corrected step as a non-empty string'
            return None

        try:
            rendered = self._fit(
                trace,
                list(trace.steps[: index + 1]),
                sim_prompts.ANALYZER_SYSTEM,
                lambda r: sim_prompts.analyzer(trace, r, step),
            )
            user = sim_prompts.analyzer(trace, rendered, step)
            answer = self.llm.complete_json(
                system=sim_prompts.ANALYZER_SYSTEM,
                user=user,
                purpose=f"replay propose step {index}",
                validate=validate,
            )
        except MethodError as exc:
            raise ReplayError(
                f"the analyzer could not propose a fix for step {index} of {trace.name!r}: {exc}"
            ) from None
        return answer["content"]

    # -- replay --

    def replay(
        self, trace: TraceView, corrections: dict[int, str], *, budget: Budget | None = None
    ) -> ReplayResult:
        if not corrections:
            raise ReplayError("a replay needs at least one corrected step")
        for i in corrections:
            if not 0 <= i < len(trace.steps):
                raise ReplayError(f"step {i} is not in trace {trace.name!r} ({len(trace.steps)} steps)")
        if self.max_replays is not None and self.replays >= self.max_replays:
            raise BudgetExhausted(
                f"the LLM-simulated replayer's limit of {self.max_replays} replays is reached"
            )
        if budget is not None:
            budget.begin()  # refuses when the replay, cost or token limit is already used up
        self.replays += 1
        start = self.llm.usage()
        run = _Run(self, trace, corrections, budget, self._billed)
        try:
            run.play()
            outcome, final_answer, verdict = self._outcome(run)
        except MethodError as exc:  # a provider failure, two malformed answers, the project's spending cap
            raise ReplayError(
                f"LLM-simulated replay of {trace.name!r} stopped at step {run.position}: {exc}"
            ) from None
        finally:
            now = self.llm.usage()
            spent, billed = now - start, now - self._billed
            if budget is not None:
                budget.spend(billed.cost, billed.input_tokens + billed.output_tokens)
            self._billed = now
        details = {
            "replayer": self.name,
            "model": self.llm.model,
            "stopped": run.stopped,
            "new_steps": run.new_steps,
            "calls": spent.calls,
            "input_tokens": spent.input_tokens,
            "output_tokens": spent.output_tokens,
            "tokens": spent.input_tokens + spent.output_tokens,
        } | verdict
        return ReplayResult(
            continuation=run.continuation,
            outcome=outcome,
            final_answer=final_answer,
            cost=spent.cost,
            details=details,
        )

    def _outcome(self, run: _Run) -> tuple[str, str, dict[str, Any]]:
        """(outcome, final answer, what decided it)."""
        trace, final_answer = run.trace, run.final_answer
        if not trace.ground_truth.strip():
            return "unknown", final_answer, {"match": "no ground truth"}
        if final_answer and answers_match(final_answer, trace.ground_truth):
            return "success", final_answer, {"match": "exact"}
        if run.stopped in ("budget", "max_new_steps") and not final_answer:
            return "unknown", final_answer, {"match": f"cut short ({run.stopped}) before a final answer"}
        if not self.judge:
            return ("failure" if final_answer else "unknown"), final_answer, {"match": "exact, no judge"}
        if run.budget is not None and (why := run.budget.exhausted_by(*run.spent())):
            return "unknown", final_answer, {"match": f"no judge: {why}"}
        tail = run.conversation[-JUDGE_TAIL_STEPS:]
        rendered = self._fit(
            trace, tail, sim_prompts.JUDGE_SYSTEM, lambda r: sim_prompts.judge(trace, r, final_answer)
        )

        def validate(answer: dict[str, Any]) -> str | None:
            if answer.get("verdict") not in sim_prompts.VERDICTS:
                return f'"verdict" must be one of {", ".join(sim_prompts.VERDICTS)}'
            if not isinstance(answer.get("final_answer", ""), (str, int, float)):
                return '"final_answer" must be a string'
            return None

        try:
            answer = self.llm.complete_json(
                system=sim_prompts.JUDGE_SYSTEM,
                purpose="replay judge",
                validate=validate,
                user=sim_prompts.judge(trace, rendered, final_answer),
            )
        except MethodError as exc:  # the judge could not decide: the replay still happened
            return "unknown", final_answer, {"match": "judge failed", "judge_error": str(exc)}
        read = str(answer.get("final_answer", "")).strip()
        return (
            answer["verdict"],
            final_answer or read,
            {
                "match": "judge",
                "judge": {
                    "verdict": answer["verdict"],
                    "final_answer": read,
                    "reason": str(answer.get("reason", "")).strip(),
                },
            },
        )

    # -- prompts --

    def _fit(self, trace: TraceView, steps: list[StepView], system: str, frame) -> str:
        """``steps`` rendered as the conversation, shortened when the request would not fit the model's context."""
        empty = sim_prompts.conversation(trace.name, [])
        reserve = self.llm.count_tokens(system + frame(empty)) + self.llm.answer_tokens() + MARGIN_TOKENS
        rendered, cut = self.llm.fit_steps(steps, self.llm.budget(reserve))
        return sim_prompts.conversation(trace.name, rendered, cut=cut)

    def act(
        self,
        trace: TraceView,
        conversation: list[StepView],
        *,
        speaker: str,
        kind: str,
        tool: bool,
        free: bool = False,
    ) -> dict[str, Any]:
        """One role-played step: ``content``, ``final_answer`` and ``next`` (and ``kind``, ``tool`` when ``free``)."""
        agents = cast(trace)
        system = sim_prompts.simulator_system(trace, speaker, tool=tool)

        def frame(rendered: str) -> str:
            return sim_prompts.simulator(
                trace, rendered, speaker=speaker, kind=kind, agents=agents, free=free
            )

        def validate(answer: dict[str, Any]) -> str | None:
            if not isinstance(answer.get("content"), str) or not answer["content"].strip():
                return '"content" must be the step\'s content as a non-empty string'
            if not isinstance(answer.get("final_answer", ""), (str, int, float)):  # 1729 is as good as "1729"
                return '"final_answer" must be a string'
            if not isinstance(answer.get("next", ""), str):
                return '"next" must be a string'
            if free and answer.get("kind", "message") not in ("message", "tool_call"):
                return '"kind" must be "message" or "tool_call"'
            if free and not isinstance(answer.get("tool", ""), str):
                return '"tool" must be a string'
            return None

        user = frame(self._fit(trace, conversation, system, frame))
        answer = self.llm.complete_json(
            system=system,
            user=user,
            validate=validate,
            purpose=f"replay step {len(conversation)} as {speaker}"[:80],
        )
        # A name that is no agent of this system ("Orchestrator (thought)", "the team") is no hint: the recorded
        # order, or the model asked on its own, decides instead; only "" says the run is over.
        nxt = answer.get("next", "")
        final = answer.get("final_answer", "")
        return answer | {
            "next": nxt if nxt in agents or nxt == "" else None,
            "final_answer": "" if isinstance(final, bool) else str(final),
        }

    def who_next(self, trace: TraceView, conversation: list[StepView]) -> str:
        """The agent the model says acts next past the recorded order, "" when it says the run is over."""
        agents = cast(trace)

        def frame(rendered: str) -> str:
            return sim_prompts.who_next(trace, rendered, agents=agents)

        def validate(answer: dict[str, Any]) -> str | None:
            nxt = answer.get("next")
            if not isinstance(nxt, str) or (nxt and nxt not in agents):
                return f'"next" must be "" or one of {", ".join(agents)}'
            return None

        user = frame(self._fit(trace, conversation, sim_prompts.WHO_NEXT_SYSTEM, frame))
        answer = self.llm.complete_json(
            system=sim_prompts.WHO_NEXT_SYSTEM,
            user=user,
            validate=validate,
            purpose=f"replay step {len(conversation)}: who acts next",
        )
        return answer["next"]


class _Run:
    """One replay in progress: the conversation as the agents see it and the continuation returned."""

    def __init__(
        self,
        replayer: LlmSimulatedReplayer,
        trace: TraceView,
        corrections: dict[int, str],
        budget: Budget | None,
        start: Usage,
    ) -> None:
        self.replayer, self.trace, self.corrections = replayer, trace, corrections
        self.budget, self.start = budget, start
        self.position = min(corrections)
        self.conversation: list[StepView] = list(trace.steps[: self.position])
        self.continuation: list[dict[str, Any]] = []
        self.final_answer = ""
        self.stopped = ""
        self.new_steps = 0
        self.hint = ""  # the speaker the last step named

    def spent(self) -> tuple[float, int]:
        used = self.replayer.llm.usage() - self.start
        return used.cost, used.input_tokens + used.output_tokens

    def play(self) -> None:
        last = len(self.trace.steps) - 1
        while True:
            step, source, nxt, declared = self._next()
            if step is None:
                return
            self.conversation.append(step)
            self.continuation.append(_step_dict(step, source))
            said = stated_answer(step.content) or declared
            self.final_answer = said or self.final_answer
            if said:
                self.stopped = "final_answer"
            elif _TERMINATE.match(step.content.strip()):
                self.stopped = "terminated"
            elif self.position >= last and nxt == "":
                self.stopped = "nobody_next"
            elif (
                self.position >= last and source == "recorded"
            ):  # the recording ends with a person or the system
                self.stopped = "recorded_end"
            if self.stopped:
                return
            self.hint = nxt or ""
            self.position += 1

    def _next(self) -> tuple[StepView | None, str, str | None, str]:
        """The step at ``position`` -- corrected, kept as recorded, or role-played (None when the replay stops) --,
        how it came about, whom it names to act next (None: nobody was asked) and the final answer it declares."""
        trace, i = self.trace, self.position
        recorded = trace.steps[i] if i < len(trace.steps) else None
        if i in self.corrections and recorded is not None:
            return replace(recorded, content=self.corrections[i]), "corrected", None, ""
        if recorded is not None and recorded.kind in KEPT_KINDS:
            return recorded, "recorded", None, ""
        if self.new_steps >= self.replayer.max_new_steps:
            self.stopped = "max_new_steps"
            return None, "", None, ""
        if self.budget is not None and self.budget.exhausted_by(*self.spent()):
            self.stopped = "budget"
            return None, "", None, ""
        free = recorded is None
        before = self.conversation[-1] if self.conversation else None
        if recorded is not None:
            agent, speaker, kind, tool_name, recipient = (
                recorded.agent,
                _speaker(recorded),
                recorded.kind,
                recorded.tool_name,
                recorded.recipient,
            )
        elif before is not None and before.kind == "tool_call":  # past the recording, a call gets its output
            agent, speaker, kind, tool_name, recipient = (
                "",
                before.tool_name or "tool",
                "tool_result",
                before.tool_name,
                "",
            )
        else:
            agent = speaker = self._chosen()
            if not agent:
                self.stopped = "nobody_next"
                return None, "", None, ""
            kind, tool_name, recipient = "message", "", ""
        tool = kind == "tool_result"
        answer = self.replayer.act(
            trace, self.conversation, speaker=speaker, kind=kind, tool=tool, free=free and not tool
        )
        self.new_steps += 1
        if free and not tool and answer.get("kind") == "tool_call":
            kind, tool_name = "tool_call", str(answer.get("tool", "")).strip()
        declared = "" if tool else str(answer.get("final_answer", "")).strip()
        step = StepView(
            index=i,
            agent=agent,
            kind=kind,
            content=answer["content"].strip(),
            speaker=speaker,
            recipient=recipient,
            tool_name=tool_name,
        )
        # A tool call's output comes next whatever the caller names; tool output names nobody.
        nxt = None if kind in ("tool_call", "tool_result") else answer["next"]
        return step, "simulated", nxt, declared

    def _chosen(self) -> str:
        """Past the recorded order: the agent the last step named; after tool output, the agent that called the
        tool; otherwise the model is asked ("" when it says the run is over)."""
        if self.hint in cast(self.trace):
            return self.hint
        speakers = [s.agent for s in self.conversation if s.agent]
        if self.conversation and self.conversation[-1].kind == "tool_result" and speakers:
            return speakers[-1]
        return self.replayer.who_next(self.trace, self.conversation)


def cast(trace: TraceView) -> list[str]:
    """Every agent of the system: those acting in the recording, then those known only by their system prompt (a
    run that stopped early may never have reached them, and a corrected one may)."""
    return list(dict.fromkeys([*trace.agents, *trace.system_prompts]))


def _speaker(step: StepView) -> str:
    return step.agent or step.speaker or step.tool_name


def _step_dict(step: StepView, source: str) -> dict[str, Any]:
    return {
        "index": step.index,
        "agent": step.agent,
        "kind": step.kind,
        "content": step.content,
        "speaker": step.speaker or step.agent,
        "recipient": step.recipient,
        "tool_name": step.tool_name,
        "parent": None,
        "source": source,
    }
