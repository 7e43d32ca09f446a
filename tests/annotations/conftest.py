from __future__ import annotations

import pytest

from attribution.models import AttributionRun, Verdict
from tracing.formats import ParsedGold, ParsedStep, ParsedTrace
from tracing.models import Role, Trace
from tracing.services import trace_create_from_parsed

AGENTS = ("Planner", "Coder", "Checker")


@pytest.fixture
def make_trace(project):
    counter = iter(range(10_000))

    def make(steps: int = 6, gold_step: int | None = None, content: str = "") -> Trace:
        n = next(counter)
        parsed = ParsedTrace(
            name=f"run-{n}",
            source_format="whowhen",
            question=f"question {n}",
            steps=[
                ParsedStep(
                    speaker=AGENTS[i % 3],
                    agent=AGENTS[i % 3],
                    kind="message",
                    content=content or f"step {i} of run {n}",
                )
                for i in range(steps)
            ],
            gold=[ParsedGold(step=gold_step)] if gold_step is not None else [],
        )
        return trace_create_from_parsed(project=project, upload=None, ordinal=n, parsed=parsed)

    return make


@pytest.fixture
def make_verdict(project):
    runs: dict[str, AttributionRun] = {}

    def make(trace: Trace, method: str, agent: str, step: int, confidence: float = 0.9) -> Verdict:
        run = runs.setdefault(
            method, AttributionRun.objects.create(project=project, method=method, status="succeeded")
        )
        return Verdict.objects.create(
            run=run,
            trace=trace,
            method=method,
            agent_name=agent,
            step_index=step,
            confidence=confidence,
            reason=f"{method} blames {agent}",
        )

    return make


@pytest.fixture
def ann(make_user, project):
    from tracing.services import membership_set

    user = make_user("ann")
    membership_set(project=project, user=user, role=Role.ANNOTATOR)
    return user


@pytest.fixture
def bob(make_user, project):
    from tracing.services import membership_set

    user = make_user("bob")
    membership_set(project=project, user=user, role=Role.ANNOTATOR)
    return user


@pytest.fixture
def viewer(make_user, project):
    from tracing.services import membership_set

    user = make_user("vic")
    membership_set(project=project, user=user, role=Role.VIEWER)
    return user
