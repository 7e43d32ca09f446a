"""``evaluate`` spreads an offline method's traces over forked processes (one per core by default): the verdicts and
the figures are the same as in one process, the run is counted once per trace and closed, and inside a transaction
(whose rows forked processes could not see) it stays in one process."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command

from attribution.models import AttributionRun, RunStatus, Verdict
from tests.conftest import WHO_AND_WHEN


def _evaluate(jobs: int) -> tuple[dict, AttributionRun]:
    out = io.StringIO()
    call_command(
        "evaluate", "--project", "jobs", "--method", "heuristic", "--jobs", str(jobs), "--json", stdout=out
    )
    return json.loads(out.getvalue()), AttributionRun.objects.order_by("-pk").first()


def _verdicts(run: AttributionRun) -> dict[int, tuple]:
    return {
        v.trace_id: (v.agent_name, v.step_index, v.confidence, v.status)
        for v in Verdict.objects.filter(run=run)
    }


@pytest.mark.django_db(transaction=True)
def test_forked_processes_give_the_verdicts_and_figures_of_one_process(monkeypatch):
    from attribution.services import runs

    forks = []
    fork = runs._run_batches_forked
    monkeypatch.setattr(runs, "_run_batches_forked", lambda *a: forks.append(a[2]) or fork(*a))
    files = sorted((WHO_AND_WHEN / "Algorithm-Generated").glob("*.json"))[:60]
    call_command("import_traces", *map(str, files), project="jobs", stdout=io.StringIO())
    alone, run_alone = _evaluate(1)
    forked, run_forked = _evaluate(2)
    assert forks == [2]  # only the second evaluate forked
    assert run_forked.trace_ids == run_alone.trace_ids and len(run_forked.trace_ids) == 60  # 3 batches
    assert _verdicts(run_forked) == _verdicts(run_alone)
    assert run_forked.status == RunStatus.SUCCEEDED and run_forked.done == 60
    assert {k: v for k, v in forked.items() if k != "run_id"} == {
        k: v for k, v in alone.items() if k != "run_id"
    }


@pytest.mark.django_db
def test_inside_a_transaction_it_stays_in_this_process(monkeypatch):
    from attribution.services import runs

    monkeypatch.setattr(runs, "_run_batches_forked", lambda *a: pytest.fail("forked inside a transaction"))
    files = sorted((WHO_AND_WHEN / "Algorithm-Generated").glob("*.json"))[:30]
    call_command("import_traces", *map(str, files), project="jobs", stdout=io.StringIO())
    figures, run = _evaluate(2)
    assert run.done == 30 and figures["n"] == 30
