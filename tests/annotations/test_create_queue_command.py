"""``manage.py create_queue``: the queues page's form as options -- the same checks, the same filling; ``make run``
creates the demo's queue with it (``--if-missing``, so starting again changes nothing)."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from annotations.models import Assignment, ReviewQueue
from tracing.models import Role


def create(*args: str) -> dict:
    out = StringIO()
    call_command("create_queue", *args, "--json", stdout=out)
    return json.loads(out.getvalue())


@pytest.mark.django_db
def test_a_queue_of_the_labelled_traces_is_filled_and_created_once(project, owner, make_trace):
    labelled = [make_trace(gold_step=2) for _ in range(3)]
    make_trace()  # no gold label: not in a queue of the labelled ones
    args = ("--project", "Alpha", "--name", "Check them", "--source", "search", "--gold", "yes")
    first = create(
        *args, "--overlap", "1", "--owner", "owner", "--instructions", "<b>look</b>", "--if-missing"
    )
    assert first["created"] and first["items"] == 3
    queue = ReviewQueue.objects.get(pk=first["queue"])
    assert set(queue.items.values_list("trace_id", flat=True)) == {t.pk for t in labelled}
    assert (queue.overlap, queue.created_by, queue.instructions) == (1, owner, "<b>look</b>")
    assert queue.assignment == Assignment.ANYONE
    again = create(*args, "--if-missing")
    assert again == first | {"created": False}
    with pytest.raises(CommandError, match="already has a queue with that name"):
        create(*args)  # without --if-missing the form's check speaks
    assert ReviewQueue.objects.count() == 1


@pytest.mark.django_db
def test_named_annotators_and_bad_options_are_checked(project, make_user, make_project, make_trace):
    from tracing.services import membership_set

    ann = make_user("ann")
    membership_set(project=project, user=ann, role=Role.ANNOTATOR)
    make_trace()
    made = create("--project", "Alpha", "--name", "Ann's", "--annotator", "ann")
    queue = ReviewQueue.objects.get(pk=made["queue"])
    assert queue.assignment == Assignment.NAMED and list(queue.annotators.all()) == [ann]
    with pytest.raises(CommandError, match="no project named 'Nope'"):
        create("--project", "Nope", "--name", "x")
    with pytest.raises(CommandError, match="no user named ghost"):
        create("--project", "Alpha", "--name", "x", "--annotator", "ghost")
    outsider = make_user("outsider")  # exists, but is no annotator of the project: the form refuses them
    assert outsider.pk
    with pytest.raises(CommandError, match="annotators"):
        create("--project", "Alpha", "--name", "x", "--annotator", "outsider")
    with pytest.raises(CommandError, match="overlap"):
        create("--project", "Alpha", "--name", "x", "--overlap", "0")
    assert ReviewQueue.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    "source", [["--source", "no_gold"], ["--source", "disagree"], ["--source", "low_confidence"], []]
)
def test_format_with_a_source_other_than_search_is_refused_before_anything_is_written(
    project, make_trace, source
):
    make_trace()
    with pytest.raises(CommandError, match=r"^--format only applies with --source search \(the source is "):
        create("--project", "Alpha", "--name", "x", *source, "--format", "whowhen")
    assert not ReviewQueue.objects.exists()


@pytest.mark.django_db
def test_format_with_a_scope_is_refused_and_with_a_search_it_filters(project, make_trace):
    make_trace()
    with pytest.raises(CommandError, match="with --scope, put format=... in the scope"):
        create("--project", "Alpha", "--name", "x", "--scope", "outcome=failed", "--format", "whowhen")
    assert not ReviewQueue.objects.exists()
    made = create("--project", "Alpha", "--name", "x", "--source", "search", "--format", "whowhen")
    assert ReviewQueue.objects.get(pk=made["queue"]).filter["format"] == "whowhen"
