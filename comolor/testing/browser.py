"""The cashier's journeys in a real browser: Playwright driving Debian's Chromium, headless,
against Django's live server (with the Daraja simulator where a test asks for `daraja_sim`).

Fixtures: `browser` (a fresh Chromium per test), `page` (a 1280×800 tab on the live server that
fails the test on any JavaScript error), `till_page` (the cashier logged in through the real login
form, on the till) and `screenshot` (saves the page; see `Screenshots`).

Screenshots go to `<pytest basetemp>/screenshots/`; with COMOLOR_README_SCREENSHOTS=1 the ones
marked for the README are also written to docs/screenshots/, e.g.
    COMOLOR_README_SCREENSHOTS=1 ./dev test -k journey
"""

import os
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--no-first-run", "--disable-sync"]
DESKTOP = {"width": 1280, "height": 800}
TABLET = {"width": 1024, "height": 768}
README_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
# The longest any page step may take before the test fails: generous, because a loaded 2-CPU
# machine sometimes needs seconds for a login; the tests never wait longer than their page needs.
WAIT_MS = 15_000
_CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    if report.when == "call":
        item.stash[_CALL_FAILED] = report.failed


def _screenshot_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.getbasetemp() / "screenshots"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture
def browser(monkeypatch):
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"the browser journeys need Debian's chromium at {CHROMIUM} (apt-get install chromium)")
    # Playwright's sync API keeps an asyncio loop running in this thread, and Django refuses ORM
    # calls from a thread with a running loop. The test itself is plain synchronous code, so it is safe.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    expect.set_options(timeout=WAIT_MS)
    # Per test, not per session: the loop would otherwise stay running under every later test.
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, live_server, request, tmp_path_factory):
    context = browser.new_context(viewport=DESKTOP, base_url=live_server.url)
    context.set_default_timeout(WAIT_MS)
    tab = context.new_page()
    errors = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    yield tab
    if request.node.stash.get(_CALL_FAILED, False):
        path = _screenshot_folder(tmp_path_factory) / f"FAILED-{request.node.name}.png"
        tab.screenshot(path=path)
        print(f"The page when the test failed: {path}")
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def wait_for_till(page) -> None:
    """Until till.js has started (it marks the body with its mode). The search box has autofocus
    and takes typing before that, but an Enter typed that early would find no listener."""
    page.wait_for_function("() => document.body?.dataset.tillMode === 'cart'"
                           " && document.activeElement?.id === 'till-search'")


def log_in(page, username: str, password: str = "password") -> None:
    """Through the real login form, as a cashier does; lands on the till."""
    page.goto("/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    wait_for_till(page)


def scan(page, barcode: str) -> None:
    """A keyboard-wedge scanner: the digits, then Enter, into whatever has focus (the search box)."""
    page.keyboard.type(barcode)
    page.keyboard.press("Enter")


@pytest.fixture
def till_page(page, cashier):
    # The cashier's till has its shift open (the root `till` fixture opens it): login lands on the till.
    log_in(page, cashier.username)
    return page


class Screenshots:
    """shoot(page, "mpesa-waiting") saves mpesa-waiting-1280.png and, the same state re-laid out
    at 1024×768, mpesa-waiting-1024.png; readme=True also copies both to docs/screenshots/ when
    COMOLOR_README_SCREENSHOTS=1."""

    def __init__(self, folder: Path, update_readme: bool):
        self.folder = folder
        self.update_readme = update_readme

    def __call__(self, page, name: str, *, readme: bool = False) -> list[Path]:
        sizes = [page.viewport_size, TABLET]
        paths = []
        for size in sizes:
            page.set_viewport_size(size)
            path = self.folder / f"{name}-{size['width']}.png"
            page.screenshot(path=path)
            paths.append(path)
            if readme and self.update_readme:
                README_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, README_SCREENSHOTS / path.name)
        page.set_viewport_size(sizes[0])
        return paths


@pytest.fixture
def screenshot(tmp_path_factory):
    folder = _screenshot_folder(tmp_path_factory)
    return Screenshots(folder, update_readme=os.environ.get("COMOLOR_README_SCREENSHOTS") == "1")
