"""The page in a real browser: headless Debian Chromium driven by Playwright.

Set-up installs what it needs (tests/fixtures/app/install_chromium.sh: Debian's
`chromium` with apt-get as root, or unpacked into ~/.cache without root) and
drives it with Playwright's Python package through `executable_path`; no
`playwright install`. If Chromium cannot be had, the test fails and says why.

The first test types a sentence, picks a target language, clicks Translate,
reads the output, shows the routing view and saves a screenshot; the second
uploads a gettext catalog on the File tab, picks two languages and downloads
both translations as a zip. (The README's pictures, docs/web_ui.png and
docs/web_ui_file.png, show the shipped model instead of this test's fake
translator: scripts/screenshot_web_ui.py takes them.)
"""

import os
import re
import zipfile

import pytest

from app.page import build_app
from app.server import launch, make_services
from app.service import Limits
from tests.fixtures.app import browser
from tests.fixtures.app.fake_translator import FakeTranslator
from tests.test_app import free_port

CATALOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "l10n", "sw.po")


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    try:
        return browser.chromium_executable()
    except RuntimeError as err:
        pytest.fail(f"the browser test needs Chromium: {err}")


@pytest.fixture(scope="module")
def page_url():
    services = make_services({"tiny": FakeTranslator()}, limits=Limits(max_chars=300))
    port = free_port()
    demo = build_app(services, url=f"http://127.0.0.1:{port}/")
    _, url, _ = launch(demo, host="127.0.0.1", port=port, prevent_thread_lock=True)
    yield url
    demo.close()


@pytest.mark.slow
@pytest.mark.timeout(1200)  # set-up may install Chromium first (browser.py allows it 900 s)
def test_translate_in_the_browser(chromium_executable, page_url, tmp_path):
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed; install the test extra: pip install -c constraints.txt -e '.[test]'")

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_executable, headless=True,
                                              args=browser.CHROMIUM_FLAGS)
        try:
            page = chromium.new_page(viewport={"width": 1280, "height": 900})
            page.goto(page_url, wait_until="domcontentloaded")
            source = page.locator("#source-text textarea")
            expect(source).to_be_visible(timeout=30_000)

            text = "Open the <b>file</b>. Save it!"
            browser.translate_on_page(page, text, target="German", option="German (de)")
            expect(page.locator("#char-count")).to_contain_text(f"{len(text)} / 300 characters")
            output = page.locator("#target-text textarea")
            # Sentences translated as a batch and joined; the markup stays text.
            expect(output).to_have_value("[de] Open the <b>file</b>. [de] Save it!", timeout=30_000)
            assert page.locator("#target-text b").count() == 0
            info = page.locator("#info textarea, #info input").first
            expect(info).to_have_value(re.compile(r"^From English \(en\) \(detected \d+%\) · 2 sentences"))

            page.get_by_text("What the experts did").click()
            page.locator("#route").click()
            expect(page.locator("#route-plot img")).to_be_visible(timeout=30_000)
            expect(page.get_by_role("gridcell", name="25.0%")).to_be_visible()

            screenshot = tmp_path / "web_ui.png"
            page.screenshot(path=str(screenshot), full_page=True)

            # Swap: the translation becomes the source, the detected language the target.
            page.locator("#swap").click()
            expect(source).to_have_value("[de] Open the <b>file</b>. [de] Save it!")
            expect(output).to_have_value(text)
            expect(page.locator("#source-lang input")).to_have_value("German (de)")
            expect(page.locator("#target-lang input")).to_have_value("English (en)")

            # An empty request is refused on the page, in words, and the page goes on working.
            source.fill("")
            page.locator("#translate").click()
            expect(page.get_by_text("the text is empty").first).to_be_visible(timeout=15_000)
        finally:
            chromium.close()
    with open(screenshot, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
@pytest.mark.timeout(1200)  # set-up may install Chromium first (browser.py allows it 900 s)
def test_translate_a_catalog_into_two_languages_in_the_browser(chromium_executable, page_url, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_executable, headless=True,
                                              args=browser.CHROMIUM_FLAGS)
        try:
            page = chromium.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
            page.goto(page_url, wait_until="domcontentloaded")
            expect(page.locator("#source-text textarea")).to_be_visible(timeout=30_000)
            browser.localize_on_page(page, CATALOG, [("German", "German (de)"), ("French", "French (fr)")])
            info = page.locator("#file-info textarea")
            expect(info).to_have_value("German (de): 6 translated, 3 skipped (already translated), 0 flagged\n"
                                       "French (fr): 9 translated, 0 skipped (already translated), 0 flagged",
                                       timeout=60_000)
            link = page.locator("#download a[data-testid=download-link]")
            expect(link).to_have_attribute("download", "sw.de-fr.zip")
            expect(page.get_by_role("cell", name="sw.de-fr.zip")).to_be_visible()
            screenshot = tmp_path / "web_ui_file.png"
            page.screenshot(path=str(screenshot), full_page=True)
            with page.expect_download() as download:
                link.click()
            download.value.save_as(tmp_path / "translations.zip")
        finally:
            chromium.close()
    with zipfile.ZipFile(tmp_path / "translations.zip") as zipped:
        assert sorted(zipped.namelist()) == ["de.po", "fr.po"]
        french = zipped.read("fr.po").decode()
    assert 'msgstr "[fr] Accept change: $1"' in french and "#, fuzzy" in french
    with open(screenshot, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
