from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# The flags keep Chromium from dialling out to Google at start-up, which this machine's closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item, so the ``page`` fixture knows whether the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def page(browser, tmp_path, request):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Every page must live within its own Content-Security-Policy (no inline script or style it would refuse).
    page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
    yield page
    if shots := os.environ.get("CULPRIT_SCREENSHOTS"):
        os.makedirs(shots, exist_ok=True)
    failed = getattr(request.node, "report_call", None)
    if failed is not None and failed.failed:  # what the person would have seen, kept beside the test's files
        try:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            (tmp_path / "failure.html").write_text(page.content())
            print(f"\nthe page at failure: {tmp_path / 'failure.png'} and failure.html ({page.url})")
        except Exception as exc:  # noqa: BLE001 - a diagnostic must not hide the real failure
            print(f"\nno screenshot of the failure: {exc}")
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


PASSWORD = "a-long-test-password"


def screenshot(page, name: str) -> None:
    """A full-page screenshot to look at, when CULPRIT_SCREENSHOTS names a folder (the flows' tests take them)."""
    if folder := os.environ.get("CULPRIT_SCREENSHOTS"):
        page.screenshot(path=os.path.join(folder, f"{name}.png"), full_page=True)


def owned_project(name: str, username: str):
    """A project ``name`` and its owner ``username`` (password ``PASSWORD``), as the flows' tests start."""
    from django.contrib.auth import get_user_model

    from tracing import services
    from tracing.models import Role

    user = get_user_model().objects.create_user(username, password=PASSWORD)
    project = services.project_create(name=name, owner=user)
    services.membership_set(project=project, user=user, role=Role.OWNER)
    return project


def log_in(page, base_url: str, username: str, password: str = PASSWORD) -> None:
    """Sign in through the login form, as a person does, and wait for the page it leads to."""
    page.goto(f"{base_url}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")
