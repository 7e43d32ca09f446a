"""The export builder's preview at scale: the same figures as the manifest, from narrow rows, in a fixed number of
queries whatever the number of labelled traces."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from annotations.selectors import (
    ExportFilters,
    export_case_count,
    export_cases,
    export_manifest,
    export_preview,
)
from annotations.selectors.exports import PREVIEW_SAMPLE
from tracing.models import GoldLabel, LabelSource, Trace

pytestmark = pytest.mark.django_db


def make_labelled(project, n: int, *, start: int = 0) -> None:
    """Traces with a big metadata blob (which the preview must never read), each with an imported label; every
    third also has an annotator's label, which wins."""
    traces = Trace.objects.bulk_create(
        [
            Trace(
                project=project,
                name=f"case-{i}",
                external_id=f"ext-{i}",
                step_count=3 + i % 5,
                question="q" * 1000,
                metadata={"blob": "x" * 2000},
            )
            for i in range(start, start + n)
        ]
    )
    labels = [GoldLabel(trace=t, agent_name="A", step_index=1, source=LabelSource.IMPORTED) for t in traces]
    labels += [
        GoldLabel(trace=t, agent_name="B", step_index=2, source=LabelSource.ANNOTATOR)
        for i, t in enumerate(traces)
        if i % 3 == 0
    ]
    GoldLabel.objects.bulk_create(labels)


def sample_of(preview: dict) -> list[tuple]:
    return [
        (r["trace_id"], r["name"], r["agent"], r["step"], r["source"], r["split"]) for r in preview["sample"]
    ]


def first_cases(cases) -> list[tuple]:
    """The export's first cases, in the order its files hold them."""
    return [
        (c.trace_id, c.name, c.label.agent_name, c.label.step_index, c.label.source, c.split)
        for c in cases[:PREVIEW_SAMPLE]
    ]


@pytest.mark.parametrize(
    "filters",
    [
        ExportFilters(),
        ExportFilters(verified_only=True, seed=3, test_percent=30),
        ExportFilters(sources=[LabelSource.IMPORTED], test_percent=50),
        # 14 verified cases: 3.5 and 10.5 test cases, rounded half to even by Python and by the database alike
        ExportFilters(verified_only=True, seed=11, test_percent=25),
        ExportFilters(verified_only=True, seed=11, test_percent=75),
        ExportFilters(min_agreement=0.5),  # built in Python: the agreement is computed there
        # Only the traces a trace-list search shows ("case-1", "case-10" … "case-19"), in SQL and in Python
        ExportFilters(scope="q=case-1"),
        ExportFilters(scope="q=case-1&has_gold=yes", verified_only=True, seed=4),
        ExportFilters(scope="q=case-1", min_agreement=0.5),
    ],
)
def test_the_preview_says_what_the_manifest_will_say(project, filters):
    make_labelled(project, 40)
    cases = export_cases(project=project, filters=filters)
    manifest = export_manifest(project=project, filters=filters, cases=cases, fmt="csv")
    preview = export_preview(project=project, filters=filters)
    for key in ("counts", "split_sizes", "label_provenance"):
        assert preview[key] == manifest[key]
    assert sample_of(preview) == first_cases(cases) and len(preview["sample"]) == min(
        PREVIEW_SAMPLE, len(cases)
    )
    assert export_case_count(project=project, filters=filters) == manifest["counts"]["cases"]


def test_the_preview_reads_no_trace_content_and_its_queries_do_not_grow(
    project, django_assert_max_num_queries
):
    make_labelled(project, 10)
    with CaptureQueriesContext(connection) as few:
        export_preview(project=project, filters=ExportFilters(min_agreement=0.5))
    make_labelled(project, 100, start=10)
    with django_assert_max_num_queries(len(few)) as many:
        preview = export_preview(project=project, filters=ExportFilters())
    assert preview["counts"]["cases"] == 110 and preview["label_provenance"] == {
        "annotator": 38,
        "imported": 72,
    }
    sql = " ".join(q["sql"] for q in many.captured_queries)
    assert '"metadata"' not in sql and '"question"' not in sql


def test_the_database_splits_cases_exactly_as_the_export_does_names_alike_and_not_ascii(project):
    """The preview ranks cases by the database's SHA-256 of seed, name and external id (PostgreSQL); the export
    by Python's. Traces sharing a name and source id tie on it and go by trace id in both; UTF-8 names hash alike."""
    names = ["même", "même", "日本語", "plain", "plain", "émoji 🙂", *(f"n{i}" for i in range(30))]
    traces = Trace.objects.bulk_create(
        [
            Trace(project=project, name=n, external_id="x" if k < 5 else "", step_count=1 + k)
            for k, n in enumerate(names)
        ]
    )
    GoldLabel.objects.bulk_create(
        [GoldLabel(trace=t, agent_name="A", step_index=0, source=LabelSource.IMPORTED) for t in traces]
    )
    for seed, percent in ((0, 20), (5, 50), (9, 33)):
        filters = ExportFilters(seed=seed, test_percent=percent)
        cases = export_cases(project=project, filters=filters)
        preview = export_preview(project=project, filters=filters)
        test_steps = sum(c.step_count for c in cases if c.split == "test")
        assert sample_of(preview) == first_cases(cases)  # names alike and not ASCII, in code-point order
        assert preview["counts"]["steps_by_split"]["test"] == test_steps
        assert (
            preview["split_sizes"]
            == export_manifest(project=project, filters=filters, cases=cases, fmt="csv")["split_sizes"]
        )


def test_the_preview_built_in_python_shows_what_the_database_shows(project, monkeypatch):
    """Where the cases are built in Python (SQLite, or an agreement filter), the counts and the first cases are
    the same as the database's."""
    from annotations.selectors import exports

    make_labelled(project, 40)
    filters = ExportFilters(seed=2, test_percent=30)
    in_sql = export_preview(project=project, filters=filters)
    monkeypatch.setattr(exports, "_chosen_sql", lambda *args: None)
    in_python = export_preview(project=project, filters=filters)
    assert in_python == in_sql and len(in_sql["sample"]) == PREVIEW_SAMPLE


def test_in_a_big_project_the_preview_leaves_the_first_cases_out_and_says_so(
    project, monkeypatch, owner_client
):
    """Finding the first cases keeps every ranked case for a second read: in a project of more than
    ``PREVIEW_SAMPLE_UP_TO`` traces the counts come alone, and the builder says why the cases are missing."""
    from django.urls import reverse

    from annotations.selectors import exports

    make_labelled(project, 12)
    monkeypatch.setattr(exports, "PREVIEW_SAMPLE_UP_TO", 11)
    preview = export_preview(project=project, filters=ExportFilters())
    assert preview["sample"] is None and preview["counts"]["cases"] == 12
    body = owner_client.get(reverse("annotations:export_builder", args=[project.slug])).content.decode()
    assert "The export's first cases are shown in projects of up to 11 traces." in body
    assert "export-sample" not in body
    monkeypatch.setattr(exports, "PREVIEW_SAMPLE_UP_TO", 12)
    assert len(export_preview(project=project, filters=ExportFilters())["sample"]) == PREVIEW_SAMPLE
