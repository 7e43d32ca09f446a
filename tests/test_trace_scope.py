"""Acting on the traces a trace-list search shows: its "Attribute them" and "Review them in a queue" links carry
every filter of the list (the scope) to the run and queue forms, which start a run over exactly those traces, or
fill a queue with them and refill it from the same filters."""

from __future__ import annotations

import html
import re
from urllib.parse import parse_qs, urlsplit

import pytest
from django.urls import reverse

from annotations.models import QueueItem, ReviewQueue
from attribution.models import AttributionRun
from tests.conftest import import_now, incoming_path, whowhen_files
from tracing import selectors as tracing_selectors
from tracing import services as tracing_services
from tracing.forms import TraceFilterForm
from tracing.models import Role, Trace

pytestmark = pytest.mark.django_db

SCOPE = "agent=WebSurfer&outcome=failed&has_gold=yes"


@pytest.fixture
def traces(project):
    files = [p for p in whowhen_files() if p.parent.name == "Hand-Crafted"][:4]
    files += [p for p in whowhen_files() if p.parent.name == "Algorithm-Generated"][:3]
    import_now(project, *(incoming_path(p, f"{p.parent.name}/{p.name}") for p in files))
    return list(Trace.objects.filter(project=project))


def _matching(project, scope: str) -> set[int]:
    form = TraceFilterForm.for_scope(scope)
    assert form.is_valid(), form.errors
    return set(tracing_selectors.trace_ids(project=project, filters=form.filters()))


def _link(page: str, text: str) -> str:
    match = re.search(r'<a class="act" href="([^"]+)">' + text, page)
    assert match, f"no {text!r} link"
    return html.unescape(match.group(1))


def test_the_trace_list_links_its_filters_to_a_run_and_a_queue(owner_client, project, traces):
    page = owner_client.get(
        reverse("tracing:trace_list", args=[project.slug]) + "?" + SCOPE + "&page=1"
    ).content
    page = page.decode()
    for text, target in (
        ("Attribute them", "attribution:run_list"),
        ("Review them in a queue", "annotations:queue_list"),
    ):
        url = urlsplit(_link(page, text))
        assert url.path == reverse(target, args=[project.slug])
        scope = parse_qs(url.query)["scope"][0]
        assert parse_qs(scope) == parse_qs(SCOPE)  # every filter, not the page


def test_the_links_follow_the_role(client, make_user, project, traces):
    annotator, viewer = make_user("ann"), make_user("vi")
    tracing_services.membership_set(project=project, user=annotator, role=Role.ANNOTATOR)
    tracing_services.membership_set(project=project, user=viewer, role=Role.VIEWER)
    url = reverse("tracing:trace_list", args=[project.slug]) + "?" + SCOPE
    client.force_login(annotator)
    page = client.get(url).content.decode()
    assert "Attribute them" in page and "Review them in a queue" not in page  # queues are an owner's
    client.force_login(viewer)
    assert "Attribute them" not in client.get(url).content.decode()


def test_a_run_over_the_scope_attributes_exactly_the_traces_the_list_shows(owner_client, project, traces):
    wanted = _matching(project, SCOPE)
    assert 0 < len(wanted) < len(traces)
    url = reverse("attribution:run_list", args=[project.slug])
    page = owner_client.get(url, {"scope": SCOPE}).content.decode()
    assert f"The <strong>{len(wanted)}</strong> trace" in page
    assert "agent WebSurfer" in page and 'name="q"' not in page.split('id="start-run"')[1].split("</form>")[0]
    response = owner_client.post(url, {"method": "heuristic", "with_ground_truth": "on", "scope": SCOPE})
    assert response.status_code == 302
    run = AttributionRun.objects.get(project=project)
    assert set(run.trace_ids) == wanted
    assert run.description.startswith("trace list: ") and "agent WebSurfer" in run.description


def test_bad_filters_in_a_scope_start_nothing_and_say_why(owner_client, project, traces):
    url = reverse("attribution:run_list", args=[project.slug])
    response = owner_client.post(url, {"method": "heuristic", "scope": "from=2025-13-40&outcome=sideways"})
    assert response.status_code == 400 and not AttributionRun.objects.exists()
    assert "The trace list&#x27;s filters are not valid" in response.content.decode()
    page = owner_client.get(url, {"scope": "outcome=sideways"}).content.decode()
    assert "not valid" in page and 'name="q"' in page  # the plain fields are back


def test_a_queue_from_the_scope_holds_the_list_and_refills_from_it(owner_client, project, traces):
    url = reverse("annotations:queue_list", args=[project.slug])
    page = owner_client.get(url, {"scope": SCOPE}).content.decode()
    wanted = _matching(project, SCOPE)
    assert f"the <strong>{len(wanted)}</strong> trace" in page
    response = owner_client.post(
        url,
        {
            "name": "WebSurfer failures",
            "scope": SCOPE,
            "source": "no_gold",  # the scope decides: a trace-list search
            "limit": "50",
            "overlap": "1",
            "assignment": "anyone",
            "taxonomy": "agent_error_taxonomy",
            "step_tolerance": "1",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    queue = ReviewQueue.objects.get(project=project)
    assert queue.source == "search" and queue.filter["scope"]
    assert set(QueueItem.objects.filter(queue=queue).values_list("trace_id", flat=True)) == wanted
    listing = owner_client.get(url).content.decode()
    assert "The trace list: " in listing and "agent WebSurfer" in listing
    detail = owner_client.get(reverse("annotations:queue_detail", args=[queue.pk])).content.decode()
    assert (
        "The trace list: " in detail
        and "scope agent=" not in detail
        and "see them in the trace list" in detail
    )
    # Traces that match later join at a refill; the others stay out.
    more = [p for p in whowhen_files() if p.parent.name == "Hand-Crafted"][4:10]
    import_now(project, *(incoming_path(p, f"{p.parent.name}/{p.name}") for p in more))
    wanted_now = _matching(project, SCOPE)
    assert wanted_now > wanted
    assert owner_client.post(reverse("annotations:queue_refill", args=[queue.pk])).status_code == 302
    assert set(QueueItem.objects.filter(queue=queue).values_list("trace_id", flat=True)) == wanted_now


def test_create_queue_takes_a_scope_and_refuses_a_bad_one(project, traces):
    import json
    from io import StringIO

    from django.core.management import CommandError, call_command

    out = StringIO()
    call_command(
        "create_queue", "--project", project.name, "--name", "cli", "--scope", SCOPE, "--json", stdout=out
    )
    report = json.loads(out.getvalue())
    assert report["items"] == len(_matching(project, SCOPE))
    with pytest.raises(CommandError, match="scope: The trace list's filters are not valid: outcome"):
        call_command(
            "create_queue", "--project", project.name, "--name", "bad", "--scope", "outcome=sideways"
        )


def test_an_export_of_the_scope_holds_exactly_the_labelled_traces_the_list_shows(
    owner_client, project, traces
):
    from annotations.models import DatasetExport
    from annotations.selectors import ExportFilters, export_cases

    wanted = _matching(project, SCOPE)
    cases = export_cases(project=project, filters=ExportFilters(scope=SCOPE))
    assert {c.trace_id for c in cases} == wanted  # every one of them is labelled (has_gold=yes)
    url = reverse("annotations:export_builder", args=[project.slug])
    page = owner_client.get(url, {"scope": SCOPE}).content.decode()
    assert f"Only the <strong>{len(wanted)}</strong> trace" in page and 'name="scope"' in page
    assert f"<strong>{len(wanted)} case" in page  # the preview counts the scope's cases
    preview = owner_client.get(
        reverse("annotations:export_preview", args=[project.slug]),
        {"scope": SCOPE, "sources": ["imported"], "seed": "0", "test_percent": "20", "format": "csv"},
        HTTP_HX_REQUEST="true",
    ).content.decode()
    assert f"{len(wanted)} case" in preview
    form = {"scope": SCOPE, "sources": ["imported"], "seed": "0", "test_percent": "20", "format": "csv"}
    response = owner_client.post(url, form)
    export = DatasetExport.objects.get(project=project)
    assert export.filters["scope"] == SCOPE
    assert response.status_code == 302 and response["Location"].endswith(f"#export-{export.pk}")
    back = owner_client.get(response["Location"].split("#")[0]).content.decode()
    assert f"Only the <strong>{len(wanted)}</strong> trace" in back  # the builder keeps the scope
    assert "only agent WebSurfer" in back or "only outcome: Failed" in back  # the export says it was scoped
    bad = owner_client.post(url, form | {"scope": "outcome=sideways"})
    assert bad.status_code == 400 and "not valid" in bad.content.decode()


def test_export_dataset_takes_a_scope(project, traces, tmp_path):
    import json
    from io import StringIO

    from django.core.management import CommandError, call_command

    out = tmp_path / "scoped.jsonl"
    call_command(
        "export_dataset", "--project", project.name, "--format", "whowhen-jsonl", "--out", str(out),
        "--scope", SCOPE, stdout=StringIO(),
    )  # fmt: skip
    manifest = json.loads(out.with_name("scoped.jsonl.manifest.json").read_text())
    assert (
        manifest["counts"]["cases"] == len(_matching(project, SCOPE))
        and manifest["filters"]["scope"] == SCOPE
    )
    with pytest.raises(CommandError, match="--scope: The trace list's filters are not valid"):
        call_command(
            "export_dataset", "--project", project.name, "--format", "csv", "--out", str(out),
            "--scope", "from=2025-02-30",
        )  # fmt: skip


def test_the_format_counts_filter_the_list_and_traces_made_here_can_be_filtered(
    owner_client, project, traces
):
    from attribution import services as attribution_services

    attribution_services.sandbox_cases_generate(project=project, runs=3, seed=2, version=2)
    url = reverse("tracing:trace_list", args=[project.slug])
    page = owner_client.get(url).content.decode()
    assert 'href="?format=whowhen"' in page and 'href="?format=sandbox"' in page
    sandbox = owner_client.get(url, {"format": "sandbox"}).content.decode()
    made = Trace.objects.filter(project=project, source_format="sandbox").count()
    assert made and f"{made} matching trace" in sandbox and "Select a valid choice" not in sandbox


def test_an_upload_links_to_its_own_traces_and_they_travel_as_a_scope(owner_client, project, traces):
    """Upload page -> "see them in the trace list" (?batch=) -> "Attribute them": a run over exactly that upload."""
    earlier = set(Trace.objects.filter(project=project).values_list("pk", flat=True))
    files = [p for p in whowhen_files() if p.parent.name == "Algorithm-Generated"][3:5]
    # The first file again: "already imported" (its bytes share the earlier upload), not part of what this one made.
    again = [p for p in whowhen_files() if p.parent.name == "Hand-Crafted"][0]
    jobs = import_now(
        project,
        *(incoming_path(p, f"{p.parent.name}/{p.name}") for p in files),
        incoming_path(again, f"{again.parent.name}/{again.name}"),
    )
    assert jobs[-1].status == "duplicate"
    batch = jobs[0].batch
    new = set(Trace.objects.filter(project=project).values_list("pk", flat=True)) - earlier
    assert len(new) == 2
    page = owner_client.get(reverse("tracing:upload_batch", args=[project.slug, batch])).content.decode()
    link = reverse("tracing:trace_list", args=[project.slug]) + f"?batch={batch}"
    assert f'href="{link}">see the 2 in the trace list' in page
    listing = owner_client.get(link).content.decode()
    assert "2 matching traces" in listing and "Only the traces of" in listing
    assert f'name="batch" value="{batch}"' in listing  # kept when another filter changes
    assert _matching(project, f"batch={batch}") == new
    assert _matching(project, f"batch={batch}&outcome=succeeded") == {
        t.pk for t in Trace.objects.filter(pk__in=new, outcome="succeeded")
    }
    url = reverse("attribution:run_list", args=[project.slug])
    response = owner_client.post(url, {"method": "heuristic", "scope": f"batch={batch}"})
    assert response.status_code == 302
    run = AttributionRun.objects.get(project=project)
    assert set(run.trace_ids) == new and "uploaded together" in run.description
    # Not a UUID: refused with the list's message, nothing started.
    response = owner_client.post(url, {"method": "heuristic", "scope": "batch=nope"})
    assert response.status_code == 400 and AttributionRun.objects.count() == 1
