"""Folders in the upload flow, in a real browser: a chosen folder's trace files import under their paths inside it,
its other files are left out and counted; a dropped folder is walked the same way; more files than one request may
carry go in parts."""

from __future__ import annotations

import json

import pytest

from tests.browser.conftest import log_in, owned_project, screenshot
from tests.browser.test_upload_flow import DROP_FILES
from tests.conftest import sample_file
from tracing.models import IngestJob, Trace

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def _wait_until_imported(page, n: int) -> None:
    page.wait_for_selector(f".job[data-status=succeeded] >> nth={n - 1}", timeout=60_000)
    page.wait_for_function("() => !document.querySelector('.jobs[hx-trigger]')")


def test_a_chosen_folder_imports_its_trace_files_under_their_paths(
    live_server, celery_worker, page, tmp_path
):
    project = owned_project("Folders", "fola")
    hand, algo = sample_file("Hand-Crafted"), sample_file("Algorithm-Generated")
    root = tmp_path / "Hand-Crafted"
    (root / "more").mkdir(parents=True)
    (root / hand.name).write_bytes(hand.read_bytes())
    (root / "more" / algo.name).write_bytes(algo.read_bytes())
    (root / "README.md").write_text("notes, not a trace")
    (root / ".DS_Store").write_bytes(b"\0\0")

    log_in(page, live_server.url, "fola")
    page.goto(f"{live_server.url}/projects/{project.slug}/upload/")
    page.wait_for_selector("#dropzone[data-ready]")
    assert page.is_visible("#choose-folder")
    with page.expect_file_chooser() as chooser:
        page.click("#choose-folder")
    chooser.value.set_files(root)
    _wait_until_imported(page, 2)
    screenshot(page, "upload-folder")

    page.wait_for_function("() => document.querySelector('#upload-status').textContent.includes('imported')")
    assert "2 files of the folders are not trace files and were left out" in page.inner_text("#upload-status")
    names = set(IngestJob.objects.filter(project=project).values_list("filename", flat=True))
    assert names == {f"Hand-Crafted/{hand.name}", f"Hand-Crafted/more/{algo.name}"}
    assert Trace.objects.filter(project=project, name=f"Hand-Crafted/{hand.stem}").exists()
    for name in names:
        assert name in page.inner_text("#upload-results")


# A folder as the browser hands it to a drop handler: FileSystemEntry objects, a directory's entries in more than
# one readEntries() batch (Chromium gives at most 100 at a time).
DROP_FOLDER = """
async ([files]) => {
  for (let i = 0; i < 600 && !document.querySelector("#dropzone[data-ready]"); i++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  function fileEntry(path, body) {
    const name = path.split("/").pop();
    return {isFile: true, isDirectory: false, name, fullPath: "/" + path,
            file(ok) { ok(new File([body], name, {type: "application/json"})); }};
  }
  function dirEntry(path, children) {
    return {isFile: false, isDirectory: true, name: path.split("/").pop(), fullPath: "/" + path,
            createReader() {
              const batches = [children.slice(0, 1), children.slice(1), []];
              return {readEntries(ok) { ok(batches.shift() || []); }};
            }};
  }
  const inner = dirEntry("runs/nested", [fileEntry("runs/nested/" + files[1].name, files[1].body)]);
  const root = dirEntry("runs", [fileEntry("runs/" + files[0].name, files[0].body), inner,
                                 fileEntry("runs/notes.md", "# not a trace"), fileEntry("runs/.hidden.json", "{}")]);
  const alone = fileEntry(files[2].name, files[2].body);
  const transfer = {files: [], items: [root, alone].map((entry) => ({kind: "file", webkitGetAsEntry: () => entry}))};
  const drop = new Event("drop", {bubbles: true, cancelable: true});
  Object.defineProperty(drop, "dataTransfer", {value: transfer});
  document.querySelector("#dropzone").dispatchEvent(drop);
}
"""


def test_a_dropped_folder_is_walked_and_a_file_dropped_beside_it_keeps_its_name(
    live_server, celery_worker, page
):
    project = owned_project("Dropped folder", "folb")
    hand, algo = sample_file("Hand-Crafted"), sample_file("Algorithm-Generated")
    files = [
        {"name": hand.name, "body": hand.read_text()},
        {"name": algo.name, "body": algo.read_text()},
        {"name": "alone.json", "body": '{"history": ['},
    ]
    log_in(page, live_server.url, "folb")
    page.goto(f"{live_server.url}/projects/{project.slug}/upload/")
    page.evaluate(DROP_FOLDER, [files])
    _wait_until_imported(page, 2)
    page.wait_for_selector(".job[data-status=failed]")
    names = set(IngestJob.objects.filter(project=project).values_list("filename", flat=True))
    assert names == {f"runs/{hand.name}", f"runs/nested/{algo.name}", "alone.json"}
    page.wait_for_function("() => document.querySelector('#upload-status').textContent.includes('imported')")
    assert "2 files of the folders are not trace files and were left out" in page.inner_text("#upload-status")


def test_a_folder_with_no_trace_file_says_so_and_sends_nothing(live_server, page, tmp_path):
    project = owned_project("Empty folder", "fold")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.png").write_bytes(b"\x89PNG")
    log_in(page, live_server.url, "fold")
    page.goto(f"{live_server.url}/projects/{project.slug}/upload/")
    page.wait_for_selector("#dropzone[data-ready]")
    with page.expect_file_chooser() as chooser:
        page.click("#choose-folder")
    chooser.value.set_files(tmp_path / "photos")
    page.wait_for_function(
        "() => document.querySelector('#upload-status').textContent.includes('No trace files')"
    )
    assert "1 other file left out" in page.inner_text("#upload-status")
    assert not IngestJob.objects.filter(project=project).exists()


def _copies(n: int) -> list[dict[str, str]]:
    """``n`` copies of one run, each made different by its question, so none is skipped as a duplicate."""
    run = json.loads(sample_file("Hand-Crafted").read_text())
    return [
        {"name": f"copy{i}.json", "body": json.dumps(run | {"question": f"({i}) {run['question']}"})}
        for i in range(n)
    ]


def test_more_files_than_one_request_carries_go_in_parts(live_server, celery_worker, page, settings):
    settings.CULPRIT_MAX_FILES_PER_UPLOAD = 2
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 2  # what the server refuses beyond: a part over it would fail
    project = owned_project("Parts", "folc")
    copies = _copies(5)
    log_in(page, live_server.url, "folc")
    page.goto(f"{live_server.url}/projects/{project.slug}/upload/")
    page.evaluate(DROP_FILES, ["#dropzone", copies])
    page.wait_for_function(
        "() => document.querySelector('#upload-status').textContent.includes('in 3 parts')"
    )
    _wait_until_imported(page, 5)
    assert IngestJob.objects.filter(project=project).count() == 5
    assert len(set(IngestJob.objects.filter(project=project).values_list("batch", flat=True))) == 3
    assert page.locator("#upload-results .jobs-summary").count() == 3


def test_a_refused_part_says_why_and_what_was_not_sent(live_server, celery_worker, page, settings):
    from django.core.cache import cache

    settings.CULPRIT_MAX_FILES_PER_UPLOAD = 1
    settings.CULPRIT_RATE_LIMITS = settings.CULPRIT_RATE_LIMITS | {"upload": "1/m"}
    cache.clear()  # the rate counters (only the cache's own keys: the broker shares the database)
    project = owned_project("Refused", "fole")
    copies = _copies(3)
    log_in(page, live_server.url, "fole")
    page.goto(f"{live_server.url}/projects/{project.slug}/upload/")
    page.evaluate(DROP_FILES, ["#dropzone", copies])
    page.wait_for_function("() => document.querySelector('#upload-status').textContent.includes('failed')")
    text = page.inner_text("#upload-status")
    assert "part 2 of 3 failed (Too many requests; try again shortly. (retry after" in text
    assert "1 more file was not sent" in text
    assert IngestJob.objects.filter(project=project).count() == 1
    cache.clear()
