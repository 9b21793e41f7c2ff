"""Take the README's pictures of the web UI (docs/web_ui.png, docs/web_ui_file.png) with the shipped model.

    .venv/bin/python scripts/screenshot_web_ui.py                   # data/models/mswitch-release
    .venv/bin/python scripts/screenshot_web_ui.py --checkpoint runs/demo --out /tmp/page.png --file-out /tmp/file.png

Serves the page in this process exactly as `python -m app` does (same services,
same Blocks), drives headless Debian Chromium with Playwright (installed by
tests/fixtures/app/browser.py, as the browser test does, plus FONTS so
that the Hindi and Korean examples are not boxes), translates a
few sentences into German, opens the expert-routing view and saves a full-page
screenshot; then, on the File tab, translates a LibreOffice catalog
(tests/fixtures/l10n/sw.po) into German and French and saves a second one.
What the pictures show is the model's real output.
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
FONTS = "fonts-lohit-deva fonts-nanum"  # Devanagari (78 kB), Hangul (10 MB)
TEXT = "The file could not be saved. Do you want to save the document in another format?"
CATALOG = os.path.join(ROOT, "tests", "fixtures", "l10n", "sw.po")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=os.path.join(ROOT, "data", "models", "mswitch-release"))
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "web_ui.png"))
    parser.add_argument("--file-out", default=os.path.join(ROOT, "docs", "web_ui_file.png"))
    parser.add_argument("--text", default=TEXT)
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    from playwright.sync_api import expect, sync_playwright

    from app.page import build_app
    from app.server import launch, make_services, model_names
    from mtmoe.translate import Translator
    from tests.fixtures.app import browser

    executable = browser.chromium_executable(extra_packages=FONTS)
    name = model_names([args.checkpoint])[0]
    services = make_services({name: Translator.from_checkpoint(args.checkpoint)}, warm_batch=1)
    demo = build_app(services, url="http://127.0.0.1:7861/")
    _, url, _ = launch(demo, host="127.0.0.1", port=7861, prevent_thread_lock=True)
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=executable, headless=True,
                                                  args=browser.CHROMIUM_FLAGS)
            page = chromium.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url, wait_until="domcontentloaded")
            expect(page.locator("#source-text textarea")).to_be_visible(timeout=60_000)
            browser.translate_on_page(page, args.text, target="German", option="German (de)")
            output = page.locator("#target-text textarea")
            expect(output).not_to_have_value("", timeout=120_000)
            page.get_by_text("What the experts did").click()
            page.locator("#route").click()
            expect(page.locator("#route-plot img")).to_be_visible(timeout=120_000)
            page.screenshot(path=args.out, full_page=True)
            print(f"{output.input_value()!r}\nwrote {args.out}")
            browser.localize_on_page(page, CATALOG, [("German", "German (de)"), ("French", "French (fr)")])
            info = page.locator("#file-info textarea")
            expect(info).not_to_have_value("", timeout=600_000)
            page.get_by_text("What the experts did").click()  # closed again: the File tab fits the picture
            page.screenshot(path=args.file_out, full_page=True)
            print(f"{info.input_value()}\nwrote {args.file_out}")
            chromium.close()
    finally:
        demo.close()


if __name__ == "__main__":
    main()
