"""Take the README's picture of the web UI (docs/web_ui.png) with the shipped model.

    .venv/bin/python scripts/screenshot_web_ui.py                   # data/models/mswitch-release
    .venv/bin/python scripts/screenshot_web_ui.py --checkpoint runs/demo --out /tmp/page.png

Serves the page in this process exactly as `python -m app` does (same services,
same Blocks), drives headless Debian Chromium with Playwright (installed by
tests/fixtures/app/install_chromium.sh, as the browser test does, plus FONTS so
that the Hindi and Korean examples are not boxes), translates a
few sentences into German, opens the expert-routing view and saves a full-page
screenshot. What the picture shows is the model's real output.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
INSTALLER = os.path.join(ROOT, "tests", "fixtures", "app", "install_chromium.sh")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
FONTS = "fonts-lohit-deva fonts-nanum"  # Devanagari (78 kB), Hangul (10 MB)
TEXT = "The file could not be saved. Do you want to save the document in another format?"


def chromium() -> str:
    env = {**os.environ, "MTMOE_CHROMIUM_EXTRA_PACKAGES": FONTS}
    result = subprocess.run(["bash", INSTALLER], capture_output=True, text=True, timeout=900, env=env)
    if result.returncode != 0:
        raise SystemExit(f"could not install Chromium: {result.stderr.strip()[-500:]}")
    return result.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=os.path.join(ROOT, "data", "models", "mswitch-release"))
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "web_ui.png"))
    parser.add_argument("--text", default=TEXT)
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    from playwright.sync_api import expect, sync_playwright

    from app.page import build_app
    from app.server import launch, make_services, model_names
    from mtmoe.translate import Translator

    executable = chromium()
    name = model_names([args.checkpoint])[0]
    services = make_services({name: Translator.from_checkpoint(args.checkpoint)}, warm_batch=1)
    demo = build_app(services, url="http://127.0.0.1:7861/")
    _, url, _ = launch(demo, host="127.0.0.1", port=7861, prevent_thread_lock=True)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url, wait_until="domcontentloaded")
            source = page.locator("#source-text textarea")
            expect(source).to_be_visible(timeout=60_000)
            source.fill(args.text)
            page.locator("#target-lang input").click()
            page.locator("#target-lang input").fill("German")
            page.get_by_role("option", name="German (de)").click()
            page.locator("#translate").click()
            output = page.locator("#target-text textarea")
            expect(output).not_to_have_value("", timeout=120_000)
            page.get_by_text("What the experts did").click()
            page.locator("#route").click()
            expect(page.locator("#route-plot img")).to_be_visible(timeout=120_000)
            page.screenshot(path=args.out, full_page=True)
            print(f"{output.input_value()!r}\nwrote {args.out}")
            browser.close()
    finally:
        demo.close()


if __name__ == "__main__":
    main()
