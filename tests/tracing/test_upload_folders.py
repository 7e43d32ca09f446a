"""A folder dropped or chosen in the browser: each file comes with its path inside the folder (the multipart name
keeps only its last part), and is imported under the name ``import_traces`` gives a folder's file."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from tests.conftest import sample_file
from tracing.models import IngestJob, Trace

pytestmark = pytest.mark.django_db


def _post(client, project, files, paths):
    return client.post(
        reverse("tracing:upload", args=[project.slug]),
        {"files": files, "paths": paths},
        HTTP_HX_REQUEST="true",
    )


def test_a_folder_s_files_are_named_by_their_path_inside_it(owner_client, project):
    hand, algo = sample_file("Hand-Crafted"), sample_file("Algorithm-Generated")
    response = _post(
        owner_client,
        project,
        [SimpleUploadedFile(hand.name, hand.read_bytes()), SimpleUploadedFile(algo.name, algo.read_bytes())],
        [f"Hand-Crafted/{hand.name}", f"runs/Algorithm-Generated/{algo.name}"],
    )
    assert response.status_code == 200
    names = set(IngestJob.objects.filter(project=project).values_list("filename", flat=True))
    assert names == {f"Hand-Crafted/{hand.name}", f"runs/Algorithm-Generated/{algo.name}"}
    body = response.content.decode()
    assert f"Hand-Crafted/{hand.name}" in body


def test_a_file_that_came_by_itself_keeps_its_own_name_beside_a_folder_s(owner_client, project):
    hand, algo = sample_file("Hand-Crafted"), sample_file("Algorithm-Generated")
    _post(
        owner_client,
        project,
        [SimpleUploadedFile(hand.name, hand.read_bytes()), SimpleUploadedFile(algo.name, algo.read_bytes())],
        ["", f"./Algorithm-Generated//{algo.name}"],
    )
    names = set(IngestJob.objects.filter(project=project).values_list("filename", flat=True))
    assert names == {hand.name, f"Algorithm-Generated/{algo.name}"}


def test_only_the_path_s_folders_are_taken_the_file_name_is_the_file_s_own(owner_client, project):
    hand = sample_file("Hand-Crafted")
    _post(
        owner_client, project, [SimpleUploadedFile(hand.name, hand.read_bytes())], ["team\\runs\\other.json"]
    )
    assert IngestJob.objects.get(project=project).filename == f"team/runs/{hand.name}"


@pytest.mark.parametrize(
    ("paths", "message"),
    [
        (["../../etc/x.json"], "climbs out of its folder"),
        (["a.json", "b.json"], "2 folder paths came with 1 files"),
        (["x" * 501], "over 500 characters"),
    ],
)
def test_bad_folder_paths_refuse_the_upload_with_a_reason_and_import_nothing(
    owner_client, project, paths, message
):
    hand = sample_file("Hand-Crafted")
    response = _post(owner_client, project, [SimpleUploadedFile(hand.name, hand.read_bytes())], paths)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not IngestJob.objects.filter(project=project).exists()
    assert not Trace.objects.filter(project=project).exists()


def test_the_upload_page_gives_the_browser_the_per_request_limits(owner_client, project, settings):
    settings.CULPRIT_MAX_FILES_PER_UPLOAD = 7
    body = owner_client.get(reverse("tracing:upload", args=[project.slug])).content.decode()
    assert 'data-max-files="7"' in body and f'data-max-bytes="{settings.CULPRIT_MAX_UPLOAD_BYTES}"' in body
    assert 'id="id_folder" webkitdirectory' in body
