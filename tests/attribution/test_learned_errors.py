"""The learned model reads every labelled error of a run, not only the decisive one: AgentRx's failures and TRAIL's
errors reach training, a step-level detector learns from them, the agent model may consult it, and it is stored as
plain arrays that are checked when read (a model stored before it still loads)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from attribution.learning import Attributor, Example, ModelFormatError, fit
from attribution.learning import agents as agent_model
from attribution.learning.errors import N_COLUMNS, ErrorDetector, held_out
from attribution.learning.model import prepare
from attribution.learning.selectors import training_examples
from attribution.methods.base import StepView, TraceView
from tests.conftest import ROOT, import_now, incoming_path
from tracing.models import ErrorLabel, JobStatus, Trace

AGENTRX = ROOT / "tests" / "fixtures" / "agentrx"
RUN = "2dfc4c37-fec1-4518-84a7-10095d30ad75"


def _run(k: int, error_agent: str) -> Example:
    """A planner and two workers; the worker named ``error_agent`` makes the run's errors (tracebacks), and the
    decisive one is its first. The other worker's turns are sound."""
    steps = [StepView(index=0, agent="user", kind="human", content="Find the figure and report it.")]
    for turn in range(4):
        for agent in ("planner", "reader", "writer"):
            i = len(steps)
            broken = agent == error_agent and turn in (1, 2)
            text = (
                f"Traceback (most recent call last): KeyError 'col{k}{turn}'"
                if broken
                else f"{agent} turn {turn}: the plan holds, the value {k}{turn}7 is checked"
            )
            steps.append(StepView(index=i, agent=agent, kind="message", content=text))
    errors = tuple(s.index for s in steps if s.content.startswith("Traceback"))
    view = TraceView(
        trace_id=k + 1,
        name=f"run {k}",
        question="Find the figure and report it.",
        ground_truth="",
        outcome="failed",
        steps=tuple(steps),
        agents=("user", "planner", "reader", "writer"),
    )
    return Example(view=view, agent=error_agent, step=errors[0], errors=errors, group=f"run {k}")


EXAMPLES = [_run(k, "reader" if k % 2 else "writer") for k in range(16)]


@pytest.mark.django_db
def test_training_examples_carry_every_labelled_error_of_an_agentrx_run(project):
    (run,) = import_now(project, incoming_path(AGENTRX / "magentic" / f"{RUN}.json"))
    (labels,) = import_now(
        project, incoming_path(AGENTRX / "ground_truth" / "magentic_one_ground_truth.json")
    )
    assert run.status == labels.status == JobStatus.SUCCEEDED
    trace = Trace.objects.get(pk=run.trace_ids[0])
    listed = sorted(
        ErrorLabel.objects.filter(trace=trace, step_index__isnull=False).values_list("step_index", flat=True)
    )
    (example,) = training_examples(project_ids=[project.pk])
    assert listed and sorted(example.errors) == listed
    assert example.step in example.errors  # the decisive failure is one of them
    # A label source not asked for brings neither the gold label nor the errors.
    assert training_examples(project_ids=[project.pk], sources=["annotator"]) == []


def test_every_error_of_a_run_is_a_positive_and_the_decisive_step_always_is():
    e = EXAMPLES[0]
    r = prepare(e)
    assert r.errors == frozenset(e.errors)
    without = prepare(replace(e, errors=()))
    assert without.errors == {e.step}  # a source listing only the decisive step still teaches that one


def test_the_detector_learns_where_the_errors_are_and_finds_them_on_a_run_it_never_saw():
    rows = [prepare(e) for e in EXAMPLES[:-1]]
    detector = ErrorDetector.fit(rows)
    new = prepare(EXAMPLES[-1])
    odds = detector.log_odds(new.features, new.candidates)
    top = new.candidates[int(np.argmax(odds))]
    assert top in EXAMPLES[-1].errors
    assert ErrorDetector.fit(rows[:3]) is None  # too few traces to learn from


def test_the_detectors_held_out_odds_come_from_fits_without_the_row():
    rows = [prepare(e) for e in EXAMPLES]
    odds = held_out(rows)
    assert all(o is not None and o.shape == (len(r.candidates),) for o, r in zip(odds, rows))
    # Row 0 is held out in fold 0: refitting without it gives exactly its odds; the detector on every row does not.
    alone = ErrorDetector.fit([r for i, r in enumerate(rows) if i % 3 != 0])
    assert np.allclose(odds[0], alone.log_odds(rows[0].features, rows[0].candidates))
    everything = ErrorDetector.fit(rows)
    assert not np.allclose(odds[0], everything.log_odds(rows[0].features, rows[0].candidates))


def test_the_agent_model_can_name_the_agent_of_the_likeliest_error():
    rows = [prepare(e) for e in EXAMPLES]
    detector = ErrorDetector.fit(rows)
    r = rows[1]
    probs = np.full(len(r.candidates), 1 / len(r.candidates))
    model = fit(EXAMPLES)
    names, x = agent_model.candidates(
        r.features, r.candidates, probs, model.priors, errors=detector.log_odds(r.features, r.candidates)
    )
    assert agent_model.choose(names, x, "errors", agent_model.DEFAULT, names) == EXAMPLES[1].agent
    # Without a detector the rule falls back to the probability mass, as ``mass`` does.
    names, x = agent_model.candidates(r.features, r.candidates, probs, model.priors)
    assert agent_model.choose(names, x, "errors", agent_model.DEFAULT, names) == agent_model.choose(
        names, x, "mass", agent_model.DEFAULT, names
    )


def test_a_trained_model_keeps_its_detector_through_storage_and_predicts_the_same():
    model = fit(EXAMPLES)
    assert model.errors is not None and model.meta["n_errors"] == sum(len(e.errors) for e in EXAMPLES)
    stored = json.loads(json.dumps(model.to_dict()))
    again = Attributor.from_dict(stored)
    assert np.allclose(again.errors.coef, model.errors.coef, atol=1e-6)  # stored to six places
    for e in EXAMPLES[:4]:
        a, b = model.run(e.view), again.run(e.view)
        assert (a.agent, a.step) == (b.agent, b.step)


def test_a_damaged_detector_is_refused_and_a_model_stored_before_it_still_loads():
    stored = json.loads(json.dumps(fit(EXAMPLES).to_dict()))
    detector = stored["error_detector"]
    for change in (
        {"coef": detector["coef"][:-1]},
        {"mean": [float("nan")] * N_COLUMNS},
        {"scale": [0.0] * N_COLUMNS},
        {"intercept": "os.system"},
        {"coef": [1e300] * N_COLUMNS},
    ):
        with pytest.raises(ModelFormatError):
            Attributor.from_dict(stored | {"error_detector": detector | change})
    with pytest.raises(ModelFormatError):
        Attributor.from_dict(stored | {"error_detector": [1, 2, 3]})
    # Before the detector: no "error_detector" key, and one agent feature fewer.
    old = {k: v for k, v in stored.items() if k != "error_detector"}
    old["agent_features"] = list(agent_model.FEATURES_BEFORE_ERRORS)
    old["agent_weights"] = stored["agent_weights"][:-1]
    model = Attributor.from_dict(old)
    assert model.errors is None and model.agent_weights.shape == (len(agent_model.FEATURES),)
    assert model.run(EXAMPLES[0].view).agent
