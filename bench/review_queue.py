"""Review queues under load: filling a queue from a filter, leasing copies from several threads at once (each thread
its own annotator and database connection), and the labelling page of a 10,000-step trace. Prints JSON.
Usage: DATABASE_URL=postgres://…/culprit_bench python bench/review_queue.py"""

from __future__ import annotations

import json
import threading
import time

import _django

_django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402

from annotations import services as queue_services  # noqa: E402
from annotations.models import Annotation  # noqa: E402
from tracing import services  # noqa: E402
from tracing.formats import ParsedStep, ParsedTrace  # noqa: E402
from tracing.models import Project, Role  # noqa: E402

TRACES = 2000
OVERLAP = 3
THREADS = 4
ROUNDS = 20


def _trace(project: Project, n: int, steps: int):
    parsed = ParsedTrace(
        name=f"bench-{n}",
        source_format="whowhen",
        question="bench",
        steps=[
            ParsedStep(
                speaker=f"Agent{i % 4}",
                agent=f"Agent{i % 4}",
                kind="message",
                content=f"step {i} " + "lorem ipsum " * (10 + i % 200),
            )
            for i in range(steps)
        ],
    )
    return services.trace_create_from_parsed(project=project, upload=None, ordinal=n, parsed=parsed)


def _claim_all(queue, users) -> dict:
    claimed: list[list[int]] = [[] for _ in users]

    def work(slot: int, user) -> None:
        while (copy := queue_services.annotation_claim(queue=queue, user=user)) is not None:
            queue_services.annotation_submit(annotation=copy, user=user, step_index=1)
            claimed[slot].append(copy.pk)
        connection.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=work, args=(i, u)) for i, u in enumerate(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    every = [pk for ids in claimed for pk in ids]
    return {
        "threads": len(users),
        "copies_claimed_and_submitted": len(every),
        "duplicates": len(every) - len(set(every)),
        "per_second": round(len(every) / seconds, 1),
    }


def _page_ms(client: Client, url: str) -> dict[str, float]:
    samples = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        assert client.get(url).status_code == 200
        samples.append((time.perf_counter() - start) * 1000)
    return {
        "p50_ms": round(_django.percentile(samples, 50), 1),
        "p95_ms": round(_django.percentile(samples, 95), 1),
    }


def main() -> None:
    Project.objects.filter(name="bench-review").delete()
    project = services.project_create(name="bench-review")
    users = []
    for i in range(THREADS):
        user, _ = get_user_model().objects.get_or_create(username=f"bench-annotator-{i}")
        services.membership_set(project=project, user=user, role=Role.ANNOTATOR)
        users.append(user)
    for n in range(TRACES):
        _trace(project, n, 5)
    start = time.perf_counter()
    queue = queue_services.queue_create(
        project=project, user=None, name="fill", source="no_gold", overlap=OVERLAP, filter={"limit": TRACES}
    )
    fill_s = time.perf_counter() - start
    copies = Annotation.objects.filter(queue=queue).count()
    claims = _claim_all(queue, users[:OVERLAP])

    big = _trace(project, TRACES, 10_000)
    big_queue = queue_services.queue_create(
        project=project, user=None, name="big", source="search", overlap=1, filter={"q": big.name}
    )
    copy = queue_services.annotation_claim(queue=big_queue, user=users[-1])
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(users[-1])
    print(
        json.dumps(
            {
                "machine": _django.machine(),
                "fill": {"traces": TRACES, "overlap": OVERLAP, "copies": copies, "seconds": round(fill_s, 2)},
                "claim_and_submit": claims,
                "label_page_10000_steps_first_window": _page_ms(client, f"/annotations/label/{copy.pk}/"),
                "label_page_10000_steps_step_7500": _page_ms(
                    client, f"/annotations/label/{copy.pk}/?step=7500"
                ),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
