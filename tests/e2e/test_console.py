"""The console in a real browser (Playwright driving the system's Chromium) against the
real mesh: what a person does with it, and what it must never do (talk to another
origin, log errors, run inline script).

The README's screenshots come from here: set JOBMESH_UPDATE_SCREENSHOTS=1 to write them
to docs/ (otherwise they go to the test's temporary directory).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from tests.support.processes import ROOT
from tests.support.real_mesh import RealMesh, start_mesh

pytestmark = pytest.mark.e2e

playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extras)")
expect = playwright_api.expect

CHROMIUM = "/usr/bin/chromium"
ADMIN_EMAIL = "root@example.com"
PASSWORD = "correct horse battery"
# What Chromium logs for every answer with an error status that the console handles (a
# field's 400, an expired token's 401 before the refresh, a stale edit's 409): not an
# error of the console itself.
HTTP_STATUS_LOG = re.compile(r"^Failed to load resource: the server responded with a status of (400|401|409)\b")
LIVE_SCRIPT = """import sys, time
for i in range(8):
    print(f"line {i}", flush=True)
    if i == 3:
        print("a warning on stderr", file=sys.stderr, flush=True)
    time.sleep(0.4)
"""


@pytest.fixture(scope="module")
def mesh() -> Iterator[RealMesh]:
    with start_mesh(JOBMESH_ADMIN_EMAIL=ADMIN_EMAIL, JOBMESH_ADMIN_PASSWORD=PASSWORD) as real:
        yield real


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: scripts/test-tools.sh installs it (Debian package chromium)")
    with playwright_api.sync_playwright() as p:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium refuses root without it
        launched = p.chromium.launch(executable_path=CHROMIUM, args=args)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.environ.get("JOBMESH_UPDATE_SCREENSHOTS") == "1":
        return ROOT / "docs"
    return tmp_path_factory.mktemp("screenshots")


@dataclass
class Watched:
    """A browser context whose requests and console messages are recorded."""

    context: Any
    origin: str
    requests: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def page(self) -> Any:
        page = self.context.new_page()
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        return page

    def _console(self, message: Any) -> None:
        if message.type == "error" and not HTTP_STATUS_LOG.match(message.text):
            self.problems.append(f"console error: {message.text}")

    def check(self) -> None:
        foreign = [u for u in self.requests if not u.startswith(self.origin + "/")]
        assert not foreign, f"requests to another origin: {foreign}"
        assert not self.problems, self.problems


@pytest.fixture
def watched(browser: Any, mesh: RealMesh) -> Iterator[Any]:
    contexts: list[Watched] = []

    def open_context(width: int = 1280, height: int = 860) -> Watched:
        context = browser.new_context(
            viewport={"width": width, "height": height},
            locale="en-US",
            timezone_id="America/New_York",  # the viewer's zone differs from UTC and from the jobs'
            service_workers="block",
        )
        context.set_default_timeout(15_000)
        w = Watched(context, mesh.gateway)
        context.on("request", lambda request: w.requests.append(request.url))
        contexts.append(w)
        return w

    yield open_context
    for w in contexts:
        w.context.close()
    for w in contexts:
        w.check()


def sign_up(page: Any, gateway: str, name: str) -> None:
    page.goto(gateway + "/jobs")
    page.wait_for_url(re.compile(r"/signin\?next=%2Fjobs$"))  # a page that needs a session asks for one
    page.get_by_role("link", name="Sign up").click()
    page.get_by_label("Username").fill(name)
    page.get_by_label("Email").fill(f"{name}@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    page.wait_for_url(gateway + "/jobs")  # back where it was going


def sign_in(page: Any, gateway: str, email: str, path: str = "/") -> None:
    page.goto(gateway + path)
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(gateway + path)


def test_console_page_headers(mesh: RealMesh) -> None:
    with urllib.request.urlopen(mesh.gateway + "/jobs/new", timeout=10) as response:
        csp = response.headers["Content-Security-Policy"]
        assert response.headers["Content-Type"].startswith("text/html")
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        page = response.read().decode()
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'" and directives["connect-src"] == "'self'"
    assert re.fullmatch(r"'self' 'sha256-[A-Za-z0-9+/=]+'", directives["script-src"])  # the import map only
    assert directives["style-src"] == "'self'" and "unsafe" not in csp
    assert directives["frame-ancestors"] == "'none'"
    assert re.findall(r"<script(?![^>]*\bsrc=)(?![^>]*type=\"importmap\")", page) == []  # no inline code
    with urllib.request.urlopen(mesh.gateway + "/console/js/main.js", timeout=10) as response:
        assert response.headers["Content-Security-Policy"] == csp
        assert "javascript" in response.headers["Content-Type"]
    # The API and its documents are where they were.
    for path, kind in (("/openapi.json", "application/json"), ("/swagger", "text/html"), ("/api/health", "json")):
        with urllib.request.urlopen(mesh.gateway + path, timeout=10) as response:
            assert kind in response.headers["Content-Type"], path


def test_create_run_watch_pause_resume(mesh: RealMesh, watched: Any, shots: Path) -> None:
    w = watched()
    page = w.page()
    sign_up(page, mesh.gateway, "ada")
    # Some history besides: a failure, and a job whose slots overlap its runs (SKIPPED, reason overlap).
    token = page.evaluate("JSON.parse(localStorage.getItem('jobmesh.session')).accessToken")
    mesh.create_one_time(token, "raise SystemExit(3)")
    status, busy = mesh.call(
        "POST", "/api/jobs",
        {"name": "busy poller", "jobType": "Recurring", "cronExpr": "*/2 * * * * *", "overlapPolicy": "Forbid",
         "scriptContent": "import time\ntime.sleep(3)\nprint('polled')"}, token,
    )  # fmt: skip
    assert status == 201, busy
    page.get_by_role("link", name="New job").click()
    page.wait_for_url(mesh.gateway + "/jobs/new")
    page.get_by_label("Name").fill("nightly report")
    page.get_by_label("Script").fill(LIVE_SCRIPT)
    page.get_by_label("Cron expression").fill("61 3 * * *")
    page.get_by_label("Time zone").fill("Europe/Berlin")
    page.get_by_role("button", name="Create job").click()
    # The API's violation for job.cron_expr, next to the field, which is marked and focused.
    cron = page.get_by_label("Cron expression")
    page.locator("#job-cronExpr-error").get_by_text("invalid minute field '61'").wait_for()
    assert cron.get_attribute("aria-invalid") == "true"
    assert cron.evaluate("el => el === document.activeElement")
    assert page.url == mesh.gateway + "/jobs/new"

    cron.fill("30 2 * * *")
    preview = page.get_by_label("Schedule preview")
    preview.get_by_text("At 02:30 every day").wait_for()
    expect(preview.locator("ol.fires li")).to_have_count(5)
    assert re.search(r"GMT\+[12]|CES?T", preview.inner_text())  # shown in the job's zone
    expect(page.locator("#job-cronExpr-error")).to_have_count(0)
    page.get_by_role("button", name="Create job").click()
    page.wait_for_url(re.compile(r"/jobs/[0-9a-f-]{36}$"))
    job_url = page.url
    page.get_by_role("heading", name="nightly report").wait_for()
    page.get_by_text("At 02:30 every day").wait_for()
    expect(page.locator("section[aria-labelledby=next-title] ol.fires li")).to_have_count(10)

    page.get_by_role("button", name="Run now").click()
    page.wait_for_url(re.compile(r"/jobs/[0-9a-f-]{36}/runs/[0-9a-f-]{36}$"))
    output = page.get_by_test_id("output")
    output.get_by_text("line 1").wait_for()
    # Live: the output is there while the run still runs.
    assert page.locator("h1 .badge").inner_text() == "Running"
    assert page.locator("h2 .badge.live").is_visible()
    page.get_by_role("button", name="Cancel run").wait_for()
    output.get_by_text("a warning on stderr").wait_for()
    assert output.locator(".stderr").first.inner_text().startswith("a warning")
    page.screenshot(path=str(shots / "console-run.png"))
    page.locator("h1 .badge", has_text="Succeeded").wait_for(timeout=20_000)
    assert page.get_by_test_id("exit-code").inner_text() == "0"
    assert "line 7" in output.inner_text()  # the stored tail, once it has ended
    expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)
    started = page.locator("dt:text-is('Started') + dd time")
    assert started.get_attribute("title").endswith(" UTC")  # local time shown, UTC on hover
    run_url = page.url
    page.reload()  # every page has a stable URL
    page.locator("h1 .badge", has_text="Succeeded").wait_for()
    assert page.url == run_url

    page.goto(job_url)
    page.get_by_role("button", name="Pause").click()
    page.locator("h1 .badge", has_text="Paused").wait_for()
    page.get_by_role("button", name="Resume").click()
    page.locator("h1 .badge", has_text="Active").wait_for()
    history = page.locator("section[aria-labelledby=runs-title]")
    done = history.locator("tbody tr", has=page.locator(".badge", has_text="Succeeded"))
    done.wait_for()
    assert done.locator("td[data-label='Exit code']").inner_text() == "0"

    # The list: filters in the URL, the schedule in words, the strip of recent runs.
    page.goto(mesh.gateway + "/jobs")
    page.get_by_label("Name contains").fill("NIGHTLY")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url(mesh.gateway + "/jobs?q=NIGHTLY")
    row = page.locator("table.jobs tbody tr", has_text="nightly report")
    row.get_by_text("At 02:30 every day").wait_for()
    assert row.locator("td[data-label=Zone]").inner_text() == "Europe/Berlin"
    expect(row.locator(".strip .cell.st-succeeded")).to_have_count(1)
    page.reload()
    assert page.get_by_label("Name contains").input_value() == "NIGHTLY"
    page.get_by_label("State").select_option("PAUSED")
    page.wait_for_url(re.compile(r"state=PAUSED"))
    page.get_by_text("No job matches.").wait_for()

    # The session's access token expires: the next call refreshes it without leaving the page.
    page.evaluate("""() => {
        const s = JSON.parse(localStorage.getItem("jobmesh.session"));
        s.accessToken = "expired";
        localStorage.setItem("jobmesh.session", JSON.stringify(s));
        window.dispatchEvent(new StorageEvent("storage", {key: "jobmesh.session"}));  // as another tab's write
    }""")
    page.get_by_label("State").select_option("ACTIVE")
    page.locator("table.jobs tbody tr", has_text="nightly report").wait_for()
    assert page.evaluate("JSON.parse(localStorage.getItem('jobmesh.session')).accessToken") != "expired"

    page.get_by_role("link", name="Clear").click()
    page.wait_for_url(mesh.gateway + "/jobs")
    busy_row = page.locator("table.jobs tbody tr", has_text="busy poller")
    busy_row.locator(".strip .cell.st-skipped").first.wait_for()  # SKIPPED cells are their own kind
    assert "overlap" in (busy_row.locator(".strip .cell.st-skipped").first.get_attribute("title") or "")

    page.goto(mesh.gateway + "/")
    page.get_by_role("heading", name="Health: Serving").wait_for()
    page.locator(".tile", has_text="Workers alive").get_by_text("1").wait_for()
    page.locator("section[aria-labelledby=running-title] tbody tr", has_text="busy poller").first.wait_for()
    page.wait_for_timeout(300)  # the chart's figures settle
    page.screenshot(path=str(shots / "console-overview.png"), full_page=True)
    status, _ = mesh.call("PATCH", f"/api/jobs/{busy['id']}/pause", token=token)
    assert status == 200

    # A phone-width screen: nothing wider than the screen.
    phone = watched(width=390, height=844)
    small = phone.page()
    sign_in(small, mesh.gateway, "ada@example.com", "/jobs")
    small.locator("table.jobs tbody tr", has_text="nightly report").wait_for()
    assert small.evaluate("document.documentElement.scrollWidth") <= 390


def test_stale_edit_says_so_and_loses_nothing(mesh: RealMesh, watched: Any) -> None:
    token, _ = mesh.user("grace")
    status, job = mesh.call(
        "POST", "/api/jobs",
        {"name": "tidy", "jobType": "Recurring", "cronExpr": "0 4 * * *", "scriptContent": "pass"}, token,
    )  # fmt: skip
    assert status == 201, job
    page = watched().page()
    sign_in(page, mesh.gateway, "grace@example.com", f"/jobs/{job['id']}/edit")
    name = page.get_by_label("Name")
    assert name.input_value() == "tidy"
    status, _ = mesh.call("PUT", f"/api/jobs/{job['id']}", {"cronExpr": "0 5 * * *", "version": job["version"]}, token)
    assert status == 200
    name.fill("tidy up")
    page.get_by_role("button", name="Save changes").click()
    banner = page.get_by_role("alert").filter(has_text="This job was changed since you opened it")
    banner.wait_for()
    assert "0 4 * * *" in banner.inner_text() and "0 5 * * *" in banner.inner_text()
    assert name.input_value() == "tidy up"  # nothing lost
    banner.get_by_role("button", name="Keep my changes on the latest version").click()
    assert name.input_value() == "tidy up"  # mine
    assert page.get_by_label("Cron expression").input_value() == "0 5 * * *"  # theirs, which I did not touch
    page.get_by_role("button", name="Save changes").click()
    page.wait_for_url(mesh.gateway + f"/jobs/{job['id']}")
    status, saved = mesh.call("GET", f"/api/jobs/{job['id']}", token=token)
    assert (saved["name"], saved["cronExpr"], saved["version"]) == ("tidy up", "0 5 * * *", job["version"] + 2)

    page.get_by_role("heading", name="tidy up").wait_for()
    page.get_by_role("button", name="Delete").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    page.wait_for_url(mesh.gateway + "/jobs")
    page.get_by_text("No job matches.").wait_for()


def test_admin_sets_roles_and_a_viewer_sees_no_writes(mesh: RealMesh, watched: Any) -> None:
    owner_token, _ = mesh.user("olive")
    status, job = mesh.call(
        "POST", "/api/jobs", {"name": "shared", "jobType": "Recurring", "cronExpr": "@daily", "scriptContent": "pass"},
        owner_token,
    )  # fmt: skip
    assert status == 201
    status, run = mesh.call("POST", f"/api/jobs/{job['id']}/run", token=owner_token)
    assert status == 201
    mesh.user("victor")
    mesh.user("dora")

    admin = watched().page()
    sign_in(admin, mesh.gateway, ADMIN_EMAIL, "/admin/users")
    victor = admin.locator("tbody tr", has_text="victor@example.com")
    victor.get_by_label("Role of victor").select_option("ROLE_VIEWER")
    admin.get_by_role("status").get_by_text("victor is now Viewer.").wait_for()
    dora = admin.locator("tbody tr", has_text="dora@example.com")
    dora.get_by_role("button", name="Disable").click()
    admin.get_by_role("dialog").get_by_role("button", name="Disable").click()
    expect(dora.locator("td[data-label=Account]")).to_have_text("Disabled")
    status, _ = mesh.call("POST", "/api/auth/login", {"email": "dora@example.com", "password": PASSWORD})
    assert status == 401
    dora.get_by_role("button", name="Enable").click()
    expect(dora.locator("td[data-label=Account]")).to_have_text("Enabled")
    admin.reload()
    assert victor.get_by_label("Role of victor").input_value() == "ROLE_VIEWER"

    viewer = watched().page()
    sign_in(viewer, mesh.gateway, "victor@example.com", "/jobs")
    viewer.locator("table.jobs tbody tr", has_text="shared").wait_for()  # viewers read every job
    expect(viewer.get_by_role("link", name="New job")).to_have_count(0)
    viewer.goto(mesh.gateway + f"/jobs/{job['id']}")
    viewer.get_by_role("heading", name="shared").wait_for()
    viewer.get_by_text("Run history").wait_for()
    for name in ("Pause", "Resume", "Run now", "Delete", "Cancel run"):
        expect(viewer.get_by_role("button", name=name)).to_have_count(0)
    expect(viewer.get_by_role("link", name="Edit")).to_have_count(0)
    expect(viewer.get_by_role("link", name="Users")).to_have_count(0)
    viewer.goto(mesh.gateway + f"/jobs/{job['id']}/runs/{run['id']}")
    viewer.get_by_role("heading", name=re.compile("^Run ")).wait_for()
    expect(viewer.get_by_role("button", name="Cancel run")).to_have_count(0)
    viewer.goto(mesh.gateway + "/jobs/new")
    viewer.get_by_text("Viewers cannot create or change jobs.").wait_for()
    # The server refuses anyway, whatever a page shows.
    token = viewer.evaluate("JSON.parse(localStorage.getItem('jobmesh.session')).accessToken")
    status, body = mesh.call("PATCH", f"/api/jobs/{job['id']}/pause", token=token)
    assert (status, body["error"]["status"]) == (403, "PERMISSION_DENIED")
    assert urlparse(viewer.url).path == "/jobs/new"
    viewer.get_by_role("button", name="Sign out").click()
    viewer.get_by_role("heading", name="Sign in to jobmesh").wait_for()
    assert viewer.evaluate("localStorage.getItem('jobmesh.session')") is None


def test_health_problems_are_said_plainly(mesh: RealMesh, watched: Any) -> None:
    page = watched().page()
    sign_in(page, mesh.gateway, ADMIN_EMAIL)
    page.get_by_role("heading", name="Health: Serving").wait_for()
    worker = next(p for p in mesh.procs if p.name == "worker_svc.main")
    worker.popen.send_signal(signal.SIGSTOP)  # silent: its heartbeat stops
    health = page.locator("section.health")
    try:
        reload_until(page, health.get_by_role("heading", name="Health: Degraded"))
        assert "workers (Degraded): 0 alive" in health.locator(".reasons").inner_text()
    finally:
        worker.popen.send_signal(signal.SIGCONT)
    reload_until(page, health.get_by_role("heading", name="Health: Serving"))


def reload_until(page: Any, locator: Any, timeout: float = 20.0) -> None:
    """Reload (instead of waiting for the page's next poll) until ``locator`` shows."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            locator.wait_for(timeout=1000)
            return
        except playwright_api.TimeoutError:
            assert time.monotonic() < deadline, f"{locator} did not show within {timeout} s"
            page.reload()
