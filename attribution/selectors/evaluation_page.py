"""Reads of the evaluation page: which run stands for each method, its score (cached), the comparison, the chart,
the baselines in plain words, and how many traces are labelled."""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.db.models import Count

from tracing.models import GoldLabel, Trace

from ..models import AttributionRun, Verdict
from . import evaluation_records

# A run stands for its method (and is ranked) only from this many labelled traces on: at n=10 the Wilson 95% interval
# of a 50% accuracy is still 24–76%, and below it one trace moves the figure by more than ten points. So a one-trace
# "Attribute" click never replaces, nor outranks, a real evaluation.
MIN_RANKED_TRACES = 10


def latest_evaluation_run(*, project, method: str) -> AttributionRun | None:
    """The finished run that stands for ``method`` in the project (see ``evaluation_runs``)."""
    chosen = evaluation_runs(project=project, methods=[method]).get(method)
    return chosen[0] if chosen else None


def evaluation_runs(*, project, methods: list[str] | None = None) -> dict[str, tuple[AttributionRun, int]]:
    """Per method, the finished run that stands for it and the labelled traces it covered: the newest run over at
    least MIN_RANKED_TRACES labelled traces, else the run over the most (the newest of a tie). Two queries whatever
    the number of runs: labelled verdicts counted per run on ids only (never the runs' wide ``trace_ids`` JSON),
    then the chosen runs."""
    from django.db.models import Exists, OuterRef

    from ..models import RunStatus

    verdicts = Verdict.objects.filter(
        Exists(GoldLabel.objects.filter(trace_id=OuterRef("trace_id"))),
        run__project=project,
        run__status=RunStatus.SUCCEEDED,
    )
    if methods is not None:
        verdicts = verdicts.filter(run__method__in=methods)
    candidates: dict[str, list[tuple[int, int]]] = {}
    per_run = (
        verdicts.order_by()
        .values("run_id", "run__method")
        .annotate(labelled=Count("id"))
        .values_list("run__method", "run_id", "labelled")
    )
    for method, run_id, labelled in per_run:
        candidates.setdefault(method, []).append((labelled, run_id))
    chosen = {method: _standing_run(runs) for method, runs in candidates.items()}
    runs = AttributionRun.objects.defer("trace_ids").in_bulk([run_id for _, run_id in chosen.values()])
    return {method: (runs[run_id], labelled) for method, (labelled, run_id) in chosen.items()}


def _standing_run(runs: list[tuple[int, int]]) -> tuple[int, int]:
    """(labelled, run id) of the run that stands for a method: ids grow with time, so the largest is the newest."""
    big = [r for r in runs if r[0] >= MIN_RANKED_TRACES]
    return max(big, key=lambda r: r[1]) if big else max(runs)


def evaluation_comparison(*, project, split: str) -> list[dict]:
    """Every evaluated method on this split, side by side, each scored over the traces of the run that stands for it
    (``evaluation_runs``). Rows over at least MIN_RANKED_TRACES traces come first, best exact step then agent
    accuracy; smaller ones follow, largest first, marked ``ranked: False``: their figures are too noisy to order.
    Each row carries the scored ``result`` and the (gold, predicted) agents and step errors of its verdicts."""
    rows = []
    memory_only = []  # learned runs every scored trace of which their model learned from: no figure, listed last
    stamp = _gold_stamp(project)
    for method, (run, labelled) in evaluation_runs(project=project).items():
        scored = _scored_run(run, split=split, labelled=labelled, stamp=stamp)
        if scored["result"] is None and scored.get("memorised"):
            memory_only.append(
                {"method": method, "run": run, "labelled": labelled, "memorised": scored["memorised"]}
            )
        elif scored["result"] is not None:
            result = scored["result"]
            rows.append(
                {
                    "method": method,
                    "run": run,
                    "labelled": labelled,
                    "result": result,
                    "pairs": _expand(scored["pairs"]),
                    "errors": _expand(scored["errors"]),
                    "small": labelled < MIN_RANKED_TRACES,
                    "ranked": result["n"] >= MIN_RANKED_TRACES,
                    "memorised": scored.get("memorised"),
                }
            )
    ranked = sorted(
        (r for r in rows if r["ranked"]),
        key=lambda r: (-r["result"]["step_accuracy"], -r["result"]["agent_accuracy"], r["method"]),
    )
    unranked = sorted(
        (r for r in rows if not r["ranked"]),
        key=lambda r: (
            -r["result"]["n"],
            -r["result"]["step_accuracy"],
            -r["result"]["agent_accuracy"],
            r["method"],
        ),
    )
    return ranked + unranked + memory_only


# A finished run's score changes only when its traces' gold labels (or the traces) change, so it is kept for a day
# under a key naming the run, the split, the labelled verdicts it covers and the project's labels (how many, newest
# id and time: labels are replaced, never edited in place). Scoring a 2,000-trace run reads ~13,000 rows and takes ~0.4 s;
# the evaluation page reads it back in one cache round trip.
SCORE_CACHE_SECONDS = 24 * 3600


def _expand(counted: list) -> list:
    return [value for value, n in counted for _ in range(n)]


def run_scored(*, run: AttributionRun) -> dict:
    """A finished run as the evaluation page scores it on all its labelled traces (cached): ``result`` (None when
    it has none to score) and, for a learned run, ``memorised``: what it left out (``_memory_note``)."""
    return _scored_run(
        run, split="all", labelled=labelled_count(project=run.project), stamp=_gold_stamp(run.project)
    )


def run_score(*, run: AttributionRun) -> dict | None:
    """The run's exact-match accuracy against the project's gold labels (``n`` scored traces, Wilson intervals), as
    the evaluation page computes and caches it; None when none of its traces has a gold label (or, for a learned
    run, none its model did not learn from: ``left_out`` says how many of those there were)."""
    scored = run_scored(run=run)
    result = scored["result"]
    if not result:
        return None
    return {
        "n": result["n"],
        "agent_accuracy": result["agent_accuracy"],
        "step_accuracy": result["step_accuracy"],
        "agent_interval": list(result["intervals"]["agent"]),
        "step_interval": list(result["intervals"]["step"]),
        "left_out": (scored.get("memorised") or {}).get("left_out", 0),
    }


def _gold_stamp(project) -> str:
    from django.db.models import Max

    found = GoldLabel.objects.filter(trace__project=project).aggregate(
        n=Count("id"), top=Max("id"), newest=Max("created_at")
    )
    newest = found["newest"].timestamp() if found["newest"] else 0
    return f"{found['n']}-{found['top']}-{newest}"


def _scored_run(run: AttributionRun, *, split: str, labelled: int, stamp: str) -> dict:
    from django.core.cache import cache

    from ..evaluation import score

    # The run's creation time too: ids start again in a new database (a test run, a restore), times do not.
    key = f"eval-score:v3:{run.pk}:{run.created_at.timestamp()}:{split}:{labelled}:{stamp}"
    scored = cache.get(key)
    if scored is None:
        memorised, model = _memorised(run)
        records = evaluation_records(run=run, split=split, leave_out=memorised)
        # The confusion and step-error pictures need only how often each pair and each error occurs: a few hundred
        # bytes to keep, where the records themselves would be ~1 MB at 20,000 traces.
        pairs = Counter((r.gold_agent, r.pred_agent) for r in records)
        errors = Counter(r.pred_step - r.gold_step if r.pred_step >= 0 else None for r in records)
        scored = {
            "result": score(records) if records else None,
            "pairs": list(pairs.items()),
            "errors": list(errors.items()),
            "memorised": _memory_note(run, model, memorised, split),
        }
        cache.set(key, scored, SCORE_CACHE_SECONDS)
    return scored


def _memorised(run: AttributionRun) -> tuple[set[int], Any]:
    """A learned run's traces that its model learned from (scored on them, it would show its memory, not how it
    attributes a new failure), and the model; nothing for other methods."""
    from ..learning.selectors import in_sample_traces, trained_on
    from ..models import AttributorModel

    if run.method != "learned" or not run.params.get("attributor"):
        return set(), None
    # Not its weights: the page needs its name, figures and training set only.
    model = AttributorModel.objects.defer("parameters", "summary").filter(pk=run.params["attributor"]).first()
    if model is None:
        return set(), None
    return in_sample_traces(
        Verdict.objects.filter(run=run).values_list("trace_id", flat=True), trained_on(model)
    ), model


def _memory_note(run: AttributionRun, model: Any, memorised: set[int], split: str) -> dict | None:
    """What the page says of the traces it left out of a learned run's score: how many (in this split), and the
    model whose cross-validated figures stand for it instead."""
    if model is None:
        if run.method == "learned":
            return {"deleted": True, "left_out": 0}
        return None
    if not memorised:
        return None
    from ..splits import split_of

    labelled = Trace.objects.filter(pk__in=memorised, gold_labels__isnull=False).distinct()
    left_out = (
        labelled.count()
        if split == "all"
        else sum(
            1
            for fmt, external, name in labelled.values_list("source_format", "external_id", "name")
            if split_of(source_format=fmt, external_id=external, name=name) == split
        )
    )
    if not left_out:
        return None
    cv = model.cv or {}
    return {
        "deleted": False,
        "left_out": left_out,
        "model_id": model.pk,
        "model": model.label,
        "cv_agent": cv.get("agent_accuracy"),
        "cv_step": cv.get("step_accuracy"),
        "cv_n": cv.get("n"),
    }


# The trivial baselines of attribution.evaluation.baselines, in plain words, in the order the page lists them.
BASELINE_NAMES = {
    "majority": "most blamed agent / commonest step (fitted on other traces)",
    "first": "first agent action",
    "last": "last agent action",
    "random": "random acting agent",
    "random_blamed": "random among ever-blamed agents",
}
# The same, shorter and per figure, for the chart's dashed lines.
_CHART_BASELINE_NAMES = {
    "agent": {
        "majority": "most blamed agent",
        "random": "random acting agent",
        "random_blamed": "random ever-blamed agent",
    },
    "step": {"majority": "commonest step", "random": "random step", "random_blamed": "random step"},
}


def baseline_rows(result: dict) -> list[dict]:
    """A scored result's baselines as table rows, with the strongest per figure marked."""
    from ..evaluation import best_baseline

    best = {figure: best_baseline(result, figure)[0] for figure in ("agent", "step")}
    found = result["baselines"]
    names = [n for n in BASELINE_NAMES if n in found] + [n for n in found if n not in BASELINE_NAMES]
    return [
        {
            "name": name,
            "label": BASELINE_NAMES.get(name, name),
            **found[name],
            "best_agent": name == best["agent"],
            "best_step": name == best["step"],
        }
        for name in names
    ]


def evaluation_chart(comparison: list[dict], reference: dict | None) -> dict:
    """The comparison as an accuracy chart, with the best baselines of ``reference``'s traces as dashed lines."""
    from ..charts import accuracy_chart
    from ..evaluation import best_baseline

    rows = [
        {
            "label": r["method"],
            "agent": res["agent_accuracy"],
            "agent_ci": res["intervals"]["agent"],
            "step": res["step_accuracy"],
            "step_ci": res["intervals"]["step"],
            "n": res["n"],
            "muted": not r["ranked"],
        }
        for r in comparison
        for res in (r["result"],)
    ]
    lines = []
    if reference is not None:
        for figure in ("agent", "step"):
            name, value = best_baseline(reference["result"], figure)
            label = _CHART_BASELINE_NAMES[figure].get(name) or BASELINE_NAMES.get(name, name)
            lines.append(
                {
                    "label": label,
                    "agent": value if figure == "agent" else None,
                    "step": value if figure == "step" else None,
                }
            )
    return accuracy_chart(
        rows,
        lines,
        chart_id="evaluation-chart",
        title="Agent and step accuracy of each evaluated method, with 95% intervals",
    )


def evaluation_page(*, project, method: str, split: str) -> dict:
    """Everything the evaluation page shows, each run chosen and scored once (so ``evaluation_records`` runs once per
    method): the ranked comparison, the selected method's row with its baselines, confusion matrix and step-error
    histogram, the accuracy chart, and apart from all of them the "single-trace runs" (fewer than
    MIN_RANKED_TRACES labelled traces in the split), which are listed but never stand as the project's score."""
    from ..charts import confusion_matrix, step_error_histogram

    everything = evaluation_comparison(project=project, split=split)
    memory_only = [r for r in everything if "result" not in r]
    comparison = [r for r in everything if r.get("ranked")]
    single = [r for r in everything if "result" in r and not r["ranked"]]
    selected = next((r for r in comparison if r["method"] == method), None)
    # Baselines are drawn from the run over the most traces: its figures are the steadiest.
    reference = max(comparison, key=lambda r: r["result"]["n"], default=None)
    return {
        "comparison": comparison,
        "single_runs": single,
        "selected": selected,
        "selected_single": next((r for r in single if r["method"] == method), None),
        # Learned runs scored without the traces their model learned from, and those left with none to score.
        "memorised": [r for r in everything if r.get("memorised")],
        "selected_memory_only": next((r for r in memory_only if r["method"] == method), None),
        "run": selected["run"] if selected else None,
        "result": selected["result"] if selected else None,
        "baselines": baseline_rows(selected["result"]) if selected else [],
        "reference": reference,
        "reference_baselines": baseline_rows(reference["result"]) if reference else [],
        "chart": evaluation_chart(comparison, reference),
        "min_ranked": MIN_RANKED_TRACES,
        "confusion": confusion_matrix(selected["pairs"] if selected else []),
        "histogram": step_error_histogram(selected["errors"] if selected else []),
        "labelled": labelled_count(project=project, split=split),
    }


def labelled_count(*, project, split: str = "all") -> int:
    """How many of the project's traces have a gold label (in the split): as many as ``labelled_trace_ids`` lists,
    counted by the database when no split applies, and with EXISTS instead of a SELECT DISTINCT over every one."""
    from django.db.models import Exists, OuterRef

    from ..splits import split_of

    traces = Trace.objects.filter(Exists(GoldLabel.objects.filter(trace_id=OuterRef("pk"))), project=project)
    if split == "all":
        return traces.count()
    return sum(
        1
        for fmt, external, name in traces.values_list("source_format", "external_id", "name")
        if split_of(source_format=fmt, external_id=external, name=name) == split
    )
