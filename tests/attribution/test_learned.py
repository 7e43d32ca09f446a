"""The learned attributor: trained on real fixtures, stored as plain arrays (never unpickled), applied across projects
(transfer) with baselines fitted on the training side, and the heuristic's priors calibrated per project."""

from __future__ import annotations

import io
import json
import pickle

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from attribution import services
from attribution.learning import Attributor, Example, ModelFormatError, fit
from attribution.learning.calibration import MIN_LABELS, Calibration
from attribution.learning.cv import cross_validate, folds
from attribution.learning.features import DENSE, trace_features
from attribution.learning.model import EVIDENCE
from attribution.learning.priors import Label, LabelPriors
from attribution.learning.selectors import training_examples
from attribution.learning.services import (
    attributor_create,
    attributor_load,
    attributor_make_default,
    attributor_train,
    calibration_refresh,
)
from attribution.methods import get_method
from attribution.methods.base import MethodError
from attribution.methods.heuristic import METHOD as HEURISTIC
from attribution.models import AttributorModel, ProjectAttribution, Verdict
from attribution.selectors import trace_view
from tests.conftest import import_now, incoming_path, whowhen_files
from tracing.models import JobStatus, Trace

FILES = whowhen_files()


def _import(project, paths):
    traces = []
    for path in paths:
        (job,) = import_now(project, incoming_path(path, f"{path.parent.name}/{path.name}"))
        assert job.status == JobStatus.SUCCEEDED, job.error
        traces.append(Trace.objects.get(pk=job.trace_ids[0]))
    return traces


@pytest.fixture
def labelled(project):
    """Twelve real Who&When runs with their imported labels."""
    return _import(project, FILES[:12])


@pytest.mark.django_db
def test_features_are_one_row_per_step_and_name_no_agent(labelled):
    view = trace_view(labelled[0])
    f = trace_features(view)
    assert f.dense.shape == (len(view.steps), len(DENSE))
    assert f.words.shape[0] == len(view.steps)
    assert np.isfinite(f.dense).all()
    agents = {a.lower() for a in view.agents}
    assert not agents & {name.lower() for name in DENSE}  # framework-agnostic: no agent is a feature


@pytest.mark.django_db
def test_it_trains_on_real_labels_and_names_a_step_and_an_acting_agent(labelled, project):
    examples = training_examples(project_ids=[project.pk])
    assert len(examples) == 12 and {e.source for e in examples} == {"imported"}
    model = fit(examples)
    for example in examples:
        result = model.run(example.view)
        assert 0 <= result.step < len(example.view.steps)
        assert result.agent in example.view.agents
        assert len(result.scores) == len(example.view.steps) and max(result.scores) == 1.0
        assert result.reason and 0 <= result.confidence <= 1


@pytest.mark.django_db
def test_the_stored_model_is_plain_json_and_reloads_to_the_same_predictions(labelled, project):
    examples = training_examples(project_ids=[project.pk])
    model = fit(examples)
    stored = json.loads(json.dumps(model.to_dict()))  # survives a JSON round trip: no objects, no pickle
    again = Attributor.from_dict(stored)
    for example in examples[:4]:
        assert again.run(example.view).step == model.run(example.view).step


@pytest.mark.parametrize(
    "bad",
    [
        None,
        [],
        "weights",
        {"format": "culprit-attributor"},
        {"format": "pickle", "data": "gASV"},
    ],
)
def test_anything_but_the_documented_arrays_is_refused(bad):
    with pytest.raises(ModelFormatError):
        Attributor.from_dict(bad)


def _stored_blank_model() -> dict:
    """A model of zeros as it is stored (through JSON), to damage one field at a time."""
    model = Attributor(
        mean=np.zeros(len(DENSE)),
        scale=np.ones(len(DENSE)),
        weights=np.zeros(len(DENSE) + len(EVIDENCE) + 2**14),
        priors=LabelPriors.fit([Label(agent="planner", step=3, rank=1)]),
    )
    return json.loads(json.dumps(model.to_dict()))


def test_wrong_shapes_non_finite_values_and_another_feature_set_are_refused():
    good = _stored_blank_model()
    assert Attributor.from_dict(good).priors.agents == {"planner": 1}
    for change in (
        {"weights": good["weights"][:-1]},
        {"weights": [float("nan")] * len(good["weights"])},
        {"scale": [0.0] * len(DENSE)},
        {"feature_set": "steps-v1"},
        {"dense": ["x"]},
        {"agent_rule": "os.system"},
        {"agent_weights": [1.0]},
        {"agent_weights": [float("inf")] * len(good["agent_weights"])},
        {"priors": {"n": 1, "agents": {"planner": 5}}},
        {"priors": {"n": 1, "steps": {"-1": 1}}},
        {"priors": {"n": 1, "steps": {"10000": 1}}},
        {"priors": {"n": 1, "agents": {"x" * 500: 1}}},
        {"priors": {"n": -1}},
        {"priors": "counts"},
    ):
        with pytest.raises(ModelFormatError):
            Attributor.from_dict(good | change)


def test_a_pickle_payload_is_never_executed(tmp_path):
    marker = tmp_path / "ran"

    class Boom:
        def __reduce__(self):
            return (marker.write_text, ("x",))

    with pytest.raises(ModelFormatError):
        Attributor.from_dict({"format": "culprit-attributor", "weights": pickle.dumps(Boom())})
    assert not marker.exists()


@pytest.mark.django_db
def test_training_as_a_job_writes_cross_validated_figures_and_a_summary(labelled, project):
    row = attributor_create(project=project, name="team", enqueue=False)
    row = attributor_train(model_id=row.pk)
    assert row.status == "succeeded", row.error
    assert (row.version, row.n_traces, row.progress) == (1, 12, 100)
    assert 0 <= row.cv["agent_accuracy"] <= 1 and row.cv["folds"] == 5
    lo, hi = row.cv["intervals"]["step"]
    assert lo <= row.cv["step_accuracy"] <= hi
    assert set(row.cv["baselines"]) == {"majority", "first", "last", "random", "random_blamed"}
    assert row.summary["strongest_features"] and row.summary["confusion"]["rows"]
    assert (
        attributor_train(model_id=row.pk).finished_at == row.finished_at
    )  # a second delivery changes nothing
    assert attributor_create(project=project, name="team", enqueue=False).version == 2


@pytest.mark.django_db
def test_the_cross_validation_scores_the_built_in_heuristic_on_the_same_traces(labelled, project):
    """The model page compares a model with what a project has without it: the heuristic's figures in the model's
    CV are the heuristic's own verdicts (it learns nothing, so every fold gives the same answer as a plain run)."""
    row = attributor_train(model_id=attributor_create(project=project, name="vs", enqueue=False).pk)
    assert row.status == "succeeded", row.error
    heuristic = row.cv["heuristic"]
    examples = training_examples(project_ids=[project.pk])
    runs = [(HEURISTIC.run(e.view), e) for e in examples]
    assert heuristic["n"] == row.cv["n"] == len(examples) == 12
    assert heuristic["agent_accuracy"] == round(sum(r.agent == e.agent for r, e in runs) / 12, 4)
    assert heuristic["step_accuracy"] == round(sum(r.step == e.step for r, e in runs) / 12, 4)
    lo, hi = heuristic["intervals"]["agent"]
    assert lo <= heuristic["agent_accuracy"] <= hi


@pytest.mark.django_db
def test_too_few_labels_fail_with_a_sentence(project):
    _import(project, FILES[:2])
    row = attributor_train(model_id=attributor_create(project=project, name="tiny", enqueue=False).pk)
    assert row.status == "failed" and "at least" in row.error


@pytest.mark.django_db
def test_unknown_label_sources_are_refused(project):
    with pytest.raises(MethodError, match="unknown label source"):
        attributor_create(project=project, name="x", sources=["imported", "guessed"], enqueue=False)


@pytest.mark.django_db
def test_train_attributor_prints_the_documented_json(labelled, project):
    out = io.StringIO()
    call_command(
        "train_attributor",
        "--project",
        project.name,
        "--name",
        "cli",
        "--sources",
        "imported",
        "--json",
        stdout=out,
    )
    result = json.loads(out.getvalue())
    assert {"name", "version", "n_traces", "n_steps", "cv", "seconds"} <= set(result)
    assert {"agent_accuracy", "step_accuracy", "folds", "heuristic"} <= set(result["cv"])
    assert {"agent_accuracy", "step_accuracy", "intervals"} <= set(result["cv"]["heuristic"])
    assert result["n_traces"] == 12
    text = io.StringIO()
    call_command("train_attributor", "--project", project.name, "--name", "cli", "--if-missing", stdout=text)
    assert "(the heuristic on the same folds: agent " in text.getvalue()


@pytest.mark.django_db
def test_the_learned_method_uses_the_projects_default_model(labelled, project):
    with pytest.raises(MethodError, match="needs a trained model"):
        services.run_create(project=project, method="learned", trace_ids=[labelled[0].pk], enqueue=False)
    row = attributor_train(model_id=attributor_create(project=project, name="m", enqueue=False).pk)
    attributor_make_default(model=row)
    settings = ProjectAttribution.objects.get(project=project)
    assert settings.default_method == "learned" and settings.attributor == row
    run = services.run_create(
        project=project, method="learned", trace_ids=[t.pk for t in labelled[:3]], enqueue=False
    )
    run = services.run_execute_inline(run=run)
    assert run.status == "succeeded" and run.failed == 0
    assert run.params["attributor"] == row.pk
    assert all(v.status == "ok" and v.details["model"] == row.label for v in Verdict.objects.filter(run=run))


@pytest.mark.django_db
def test_transfer_applies_a_model_of_another_project_with_baselines_fitted_there(make_project, owner):
    source = make_project("Source")
    target = make_project("Target")
    _import(source, FILES[:10])
    _import(target, FILES[-6:])
    row = attributor_train(model_id=attributor_create(project=source, name="shared", enqueue=False).pk)
    out = io.StringIO()
    call_command(
        "evaluate", "--project", "Target", "--method", "learned", "--model", "shared", "--json", stdout=out
    )
    result = json.loads(out.getvalue())
    assert result["n"] == 6 and result["attributor"] == row.label
    assert result["training_projects"] == ["Source"] and "warning" not in result
    # the constant baseline answers what the *source* project blames most, whatever the target's labels say
    source_gold = [e.agent for e in training_examples(project_ids=[source.pk])]
    top = max(sorted(set(source_gold)), key=source_gold.count)
    target_gold = [e.agent for e in training_examples(project_ids=[target.pk])]
    assert result["baselines"]["majority"]["agent"] == round(target_gold.count(top) / 6, 4)


@pytest.mark.django_db
def test_evaluate_cv_folds_by_trace_and_prints_every_learner_beside_baselines(labelled, project):
    out = io.StringIO()
    call_command(
        "evaluate", "--project", project.name, "--method", "learned", "--cv", "3", "--json", stdout=out
    )
    result = json.loads(out.getvalue())
    assert result["folds"] == 3 and result["n"] == 12
    names = [m["method"] for m in result["methods"]]
    assert names == ["learned", "heuristic (calibrated)", "heuristic"]
    for method in result["methods"]:
        assert method["n"] == 12 and set(method["baselines"]) >= {"majority", "first", "last"}
    with pytest.raises(Exception, match="methods that learn"):
        call_command("evaluate", "--project", project.name, "--method", "all_at_once", "--cv", "3")


def test_folds_keep_a_group_together_and_are_deterministic():
    from attribution.methods.base import TraceView

    def ex(i, group):
        view = TraceView(
            trace_id=i, name="", question="", ground_truth="", outcome="failed", steps=(), agents=()
        )
        return Example(view=view, agent="a", step=0, group=group)

    examples = [ex(i, f"g{i // 3}") for i in range(30)]
    first = folds(examples, 5)
    assert first == folds(examples, 5)
    for i in range(0, 30, 3):
        assert len({first[i], first[i + 1], first[i + 2]}) == 1
    assert set(first) == set(range(5))


@pytest.mark.django_db
def test_cross_validation_never_lets_a_learner_see_the_trace_it_scores(labelled, project):
    examples = training_examples(project_ids=[project.pk])
    seen: list[tuple[set[int], int]] = []

    def spy(train):
        ids = {e.view.trace_id for e in train}

        def predict(view):
            seen.append((ids, view.trace_id))
            return HEURISTIC.run(view)

        return predict

    cross_validate(examples, {"spy": spy}, k=4)
    assert len(seen) == 12 and all(trace not in train for train, trace in seen)


@pytest.mark.django_db
def test_the_heuristic_is_calibrated_once_the_project_has_enough_labels_and_never_on_the_trace_itself(
    project,
):
    traces = _import(project, FILES[: MIN_LABELS + 1])
    calibration = calibration_refresh(project=project)
    assert calibration.n_labels == MIN_LABELS + 1
    described = calibration.describe()
    assert described["active"] and described["cells"]
    view = trace_view(traces[0])
    own = calibration.priors_for(view)
    others = Calibration.fit((trace_view(t), t.gold_labels.get().step_index) for t in traces[1:]).table()
    assert own == others  # leave-one-out: the trace's own label is taken out of the counts it is scored with
    run = services.run_create(project=project, method="heuristic", trace_ids=[traces[0].pk], enqueue=False)
    services.run_execute_inline(run=run)
    assert Verdict.objects.get(run=run).details["priors"]["active"] is True


@pytest.mark.django_db
def test_the_models_cv_scores_the_heuristic_calibrated_as_a_run_would_be(project):
    """The model page's heuristic row re-scores the analysis the features hold with the training folds' calibrated
    priors: the same verdict as a heuristic run with that calibration."""
    from attribution.methods.heuristic import PRIORS, verdict

    traces = _import(project, FILES[: MIN_LABELS + 4])
    views = [trace_view(t) for t in traces]
    calibration = Calibration.fit((v, t.gold_labels.get().step_index) for v, t in zip(views[3:], traces[3:]))
    # Traces outside the calibration, and inside it (their own label left out).
    for view in views[:3] + views[3:6]:
        table = calibration.priors_for(view)
        assert table is not None and table != PRIORS  # priors that differ from the built-in ones
        run = HEURISTIC.run(view, calibration=calibration)
        analysis = trace_features(view).analysis
        assert verdict(analysis, view, table) == (run.agent, run.step)
    assert verdict(analysis, view) == (HEURISTIC.run(view).agent, HEURISTIC.run(view).step)


@pytest.mark.django_db
def test_below_twenty_labels_the_built_in_priors_apply(project):
    traces = _import(project, FILES[:5])
    calibration = calibration_refresh(project=project)
    assert calibration.priors_for(trace_view(traces[0])) is None
    run = services.run_create(project=project, method="heuristic", trace_ids=[traces[0].pk], enqueue=False)
    services.run_execute_inline(run=run)
    assert "priors" not in Verdict.objects.get(run=run).details


def test_the_learned_method_without_a_model_explains_what_to_do():
    from attribution.methods.base import StepView, TraceView

    view = TraceView(
        trace_id=1,
        name="",
        question="",
        ground_truth="",
        outcome="failed",
        steps=(StepView(index=0, agent="a", kind="message", content="hi"),),
        agents=("a",),
    )
    with pytest.raises(MethodError, match="train one"):
        get_method("learned").run(view, llm=None)


@pytest.mark.django_db
def test_a_stored_model_that_no_longer_reads_is_reported_not_used(labelled, project):
    row = attributor_train(model_id=attributor_create(project=project, name="old", enqueue=False).pk)
    AttributorModel.objects.filter(pk=row.pk).update(parameters=row.parameters | {"feature_set": "steps-v0"})
    row.refresh_from_db()
    with pytest.raises(MethodError, match="train the model again"):
        attributor_load(row)


def test_numbers_past_any_trained_model_are_refused_on_reading():
    good = _stored_blank_model()
    for change in (
        {"weights": [1e308] * len(good["weights"])},
        {"mean": [1e308] * len(DENSE)},
        {"scale": [1e-300] * len(DENSE)},
        {"weights": [10**400] + good["weights"][1:]},  # an int too big for a float
        {"agent_weights": [1e300] * len(good["agent_weights"])},
    ):
        with pytest.raises(ModelFormatError):
            Attributor.from_dict(good | change)


@pytest.mark.django_db
def test_a_verdict_with_non_finite_numbers_fails_alone_and_the_run_finishes(labelled, project, monkeypatch):
    """A method whose numbers overflow: its verdict is written without them, the rest of the batch with it, and
    the run ends (one NaN in a batch's COPY failed every verdict of the batch and left the run running)."""
    from attribution.methods.base import MethodResult

    def overflowing(self, view, **kwargs):
        return MethodResult(
            agent="x",
            step=0,
            confidence=float("nan"),
            reason="r",
            scores=[float("inf")],
            details={"p": float("nan")},
        )

    monkeypatch.setattr(type(HEURISTIC), "run", overflowing)
    run = services.run_create(
        project=project, method="heuristic", trace_ids=[t.pk for t in labelled[:3]], enqueue=False
    )
    run = services.run_execute_inline(run=run)
    assert run.status == "succeeded" and run.done == 3
    verdict = Verdict.objects.filter(run=run).first()
    assert verdict.confidence == 0.0 and verdict.scores == [0.0] and verdict.details == {"p": "nan"}


@pytest.mark.django_db
def test_evaluate_model_names_the_evaluated_projects_own_first_and_asks_whose_when_unclear(make_project):
    first, second, target = make_project("First"), make_project("Second"), make_project("Target")
    for p in (first, second, target):
        _import(p, FILES[:5])
    own = attributor_train(model_id=attributor_create(project=target, name="m", enqueue=False).pk)
    attributor_train(model_id=attributor_create(project=first, name="m", enqueue=False).pk)
    elsewhere = attributor_train(model_id=attributor_create(project=second, name="only", enqueue=False).pk)
    attributor_train(model_id=attributor_create(project=first, name="only2", enqueue=False).pk)

    def evaluated(model, project="Target"):
        out = io.StringIO()
        call_command(
            "evaluate", "--project", project, "--method", "learned", "--model", model, "--json", stdout=out
        )
        return json.loads(out.getvalue())["attributor"]

    # The project's own, though First has one of that name too: trained on every label here, it has nothing to be
    # scored on that it did not learn from, and says so.
    with pytest.raises(
        CommandError, match=f"every labelled trace here \\(5\\) is one {own.label} trained on"
    ):
        evaluated("m")
    assert evaluated("only") == elsewhere.label  # one project has it: a transfer
    attributor_train(model_id=attributor_create(project=first, name="only", enqueue=False).pk)
    with pytest.raises(Exception, match="several projects; say whose: First/only, Second/only"):
        evaluated("only")
    assert evaluated("Second/only:v1") == elsewhere.label


@pytest.mark.django_db
def test_labels_outside_their_trace_are_left_out_and_said_so(labelled, project):
    from tracing.models import GoldLabel

    GoldLabel.objects.filter(trace__in=labelled[:2]).update(step_index=5000)
    row = attributor_train(
        model_id=attributor_create(project=project, name="stale", folds=50, enqueue=False).pk
    )
    assert row.status == "succeeded" and row.n_traces == 10
    skipped = row.summary["skipped"]
    assert skipped["count"] == 2 and set(skipped["traces"]) == {t.name for t in labelled[:2]}
    assert row.folds == row.cv["folds"] == 10  # what it could make, not what was asked
    GoldLabel.objects.filter(trace__in=labelled[2:9]).update(step_index=5000)
    failed = attributor_train(model_id=attributor_create(project=project, name="stale", enqueue=False).pk)
    assert failed.status == "failed" and "9 more labels point outside their trace" in failed.error
    with pytest.raises(
        Exception, match="needs at least 4 labelled traces .* it has 3 \\(9 more with a label outside"
    ):
        call_command("evaluate", "--project", project.name, "--method", "heuristic", "--cv", "3")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("command", "option", "value"),
    [("evaluate", "--cv", "1"), ("evaluate", "--cv", "-3"), ("train_attributor", "--folds", "0")],
)
def test_folds_out_of_range_are_refused(project, command, option, value):
    required = ["--method", "heuristic"] if command == "evaluate" else ["--name", "m"]
    with pytest.raises(Exception, match="folds: give 2 to|between 2 and 10, not 0"):
        call_command(command, "--project", project.name, *required, option, value)
