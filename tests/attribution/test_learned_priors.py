"""What a project's labels say before any step is read (label priors) and how the learned method names the agent."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from attribution.learning import agents, fit
from attribution.learning.model import Example
from attribution.learning.priors import Label, LabelPriors, name_key
from attribution.learning.selectors import training_examples
from tests.conftest import import_now, incoming_path, whowhen_files
from tracing.models import JobStatus


def _features(names: list[str]) -> SimpleNamespace:
    """The two things the priors read of a trace: who answers for each step and its rank among actions."""
    return SimpleNamespace(agents=names, ranks=list(range(len(names))))


def test_a_training_label_never_counts_itself():
    priors = LabelPriors.fit([Label("planner", 2, 2), Label("planner", 2, 2), Label("coder", 1, 1)])
    f = _features(["coder", "coder", "planner"])
    own = Label("planner", 2, 2)
    full, loo = priors.columns(f, [0, 1, 2]), priors.columns(f, [0, 1, 2], without=own)
    assert full[2, 0] == pytest.approx(math.log(2.5) - math.log(4))
    assert loo[2, 0] == pytest.approx(math.log(1.5) - math.log(3))  # one planner label left, of two labels
    assert loo[2, 1] == pytest.approx(math.log(1.5) - math.log(3))  # and one at step 2
    assert loo[0, 0] == pytest.approx(math.log(1.5) - math.log(3))  # the coder's count is untouched


def test_no_labels_give_flat_columns_and_names_compare_like_the_scorer():
    assert not LabelPriors().columns(_features(["a", "b"]), [0, 1]).any()
    priors = LabelPriors.fit([Label(name_key(" WebSurfer "), 0, 0)])
    assert priors.agent_shares(["websurfer", "Orchestrator"])[0] > priors.agent_shares(["Orchestrator"])[0]


def test_priors_round_trip_as_plain_counts():
    priors = LabelPriors.fit([Label("planner", 3, 1), Label("coder", 250, 7)])
    again = LabelPriors.from_dict(priors.to_dict())
    assert again.agents == priors.agents and again.steps == {3: 1} and again.ranks == {1: 1, 7: 1}


def _row(names: list[str], heuristic: str, majority: str, gold: str) -> tuple[list[str], np.ndarray, str]:
    x = np.zeros((len(names), len(agents.FEATURES)))
    for k, name in enumerate(names):
        x[k, 0] = math.log(
            0.6 if name == heuristic else 0.4
        )  # the step probabilities agree with the heuristic
        x[k, 2] = float(name == heuristic)
        x[k, 3] = 0.0 if name == majority else -1.0
    return names, x, gold


def test_the_agent_rule_leaves_the_heuristic_only_for_a_clear_gain():
    names = ["planner", "coder"]
    close = [_row(names, "coder", "planner", "coder")] * 10 + [
        _row(names, "coder", "planner", "planner")
    ] * 11
    assert agents.select(close)[0] == "heuristic"  # 11 against 10: noise
    clear = [_row(names, "coder", "planner", "coder")] * 5 + [_row(names, "coder", "planner", "planner")] * 15
    rule, _, accuracy = agents.select(clear)
    assert rule == "majority" and accuracy["majority"] == 0.75 and accuracy["heuristic"] == 0.25


@pytest.mark.django_db
def test_a_project_whose_runs_always_fail_at_one_step_teaches_the_model_that_step(project):
    traces = []
    for path in whowhen_files()[:14]:
        (job,) = import_now(project, incoming_path(path, f"{path.parent.name}/{path.name}"))
        assert job.status == JobStatus.SUCCEEDED, job.error
        traces.append(job.trace_ids[0])
    real = training_examples(project_ids=[project.pk])
    relabelled = []
    for e in real:
        third = [s for s in e.view.steps if s.agent and s.kind not in ("tool_result", "human", "system")][2]
        relabelled.append(Example(view=e.view, agent=third.agent, step=third.index, group=e.group))
    model = fit(relabelled[:11], strengths=(1.0,))
    assert model.priors.ranks[2] == 11 and model.priors.n == 11
    assert [model.run(e.view).step for e in relabelled[11:]] == [e.step for e in relabelled[11:]]
    assert "prior_action_rank" in {f["feature"] for f in model.strongest_features(len(agents.FEATURES) + 200)}


def test_a_rule_replaces_the_default_only_when_a_sign_test_says_so():
    right, wrong = True, False
    assert not agents.clearly_better([right] * 2, [wrong] * 2)  # 2 to 0: one chance in four by luck
    assert agents.clearly_better([right] * 3, [wrong] * 3)  # one in eight
    assert not agents.clearly_better([right] * 4 + [wrong] * 2, [wrong] * 4 + [right] * 2)
    assert not agents.clearly_better([right] * 10 + [wrong] * 8, [wrong] * 10 + [right] * 8)
    assert not agents.clearly_better([right] * 20, [right] * 20)  # agreeing everywhere says nothing


def test_the_weight_of_where_labels_sit_is_chosen_by_the_held_out_likelihood():
    from attribution.learning.model import select_step_rule

    priors = LabelPriors.fit([Label("a", 3, 1)] * 8 + [Label("a", 1, 0)] * 2)
    probs = np.array([0.5, 0.3, 0.2])  # the model prefers step 1
    held = [(probs, priors)] * 10

    def rows(gold_steps: list[int]) -> list[SimpleNamespace]:
        return [SimpleNamespace(candidates=[1, 3, 5], gold=[1, 3, 5].index(g)) for g in gold_steps]

    rule, weight, accuracy = select_step_rule(rows([3] * 8 + [1] * 2), held)
    assert rule == "blend" and weight > 0 and accuracy["blend"] == 0.8 and accuracy["model"] == 0.2
    rule, weight, _ = select_step_rule(rows([1] * 6 + [5] * 4), held)  # the labels' index says nothing here
    assert rule == "model" and weight == 0


def test_the_step_rules_read_the_model_and_where_the_labels_sit():
    from attribution.learning.model import pick_step

    candidates, probs = [1, 3, 5], np.array([0.5, 0.3, 0.2])
    priors = LabelPriors.fit([Label("a", 3, 1)] * 5)
    assert candidates[pick_step(candidates, probs, priors, "model")] == 1
    assert candidates[pick_step(candidates, probs, priors, "prior")] == 3
    assert candidates[pick_step(candidates, probs, priors, "blend")] == 3  # 0.3 x 5.5/6 beats 0.5 x 0.5/6
    assert (
        candidates[pick_step(candidates, probs, LabelPriors(), "prior")] == 1
    )  # no labels: the model's order


@pytest.mark.django_db
def test_the_step_rule_is_stored_and_an_unknown_one_refused(project):
    from attribution.learning.model import Attributor, ModelFormatError

    for path in whowhen_files()[:10]:
        (job,) = import_now(project, incoming_path(path, f"{path.parent.name}/{path.name}"))
        assert job.status == JobStatus.SUCCEEDED, job.error
    model = fit(training_examples(project_ids=[project.pk]))
    data = model.to_dict()
    assert data["step_rule"] in ("model", "blend", "prior")
    assert Attributor.from_dict(data).step_rule == data["step_rule"]
    with pytest.raises(ModelFormatError):
        Attributor.from_dict({**data, "step_rule": "oracle"})
    assert Attributor.from_dict(data).step_prior_weight == data["step_prior_weight"]
    before = {
        k: v for k, v in data.items() if k != "step_prior_weight"
    }  # a model trained before it was chosen
    assert Attributor.from_dict(before).step_prior_weight == 1.0
    for bad in (-1, float("nan"), 1e9, "2", True):
        with pytest.raises(ModelFormatError):
            Attributor.from_dict({**data, "step_prior_weight": bad})
