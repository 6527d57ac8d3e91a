"""Take the README's screenshot of the Space in a real (headless) Chromium: the "Aligned vs baseline" tab after a
corpus clip and "Transcribe with both" were clicked, so the boxes hold real transcripts.

    python spaces/app.py --model runs/demo --port 7861 &      # the Space on a run that has both systems
    pip install playwright                                     # needed by this script only; no browser download
    python spaces/take_screenshot.py --url http://127.0.0.1:7861/ --chromium /usr/bin/chromium

Playwright drives the installed Chromium (`--chromium`). The corpus scripts need fonts, or the Indic transcripts
show as empty boxes (Debian: `apt-get install fonts-deva fonts-beng fonts-taml`, or fonts-noto-core).
"""

import argparse
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

SPACE_DIR = Path(__file__).resolve().parent


def take_screenshot(url: str, output: Path, chromium: str, example: str, width: int = 1280) -> Path:
    """Open the comparison tab, click the corpus clip named `example`, transcribe it with both systems and save
    the whole page as a PNG once both TDT boxes and the error-rate table are filled."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.goto(url)
        page.get_by_role("tab", name="Aligned vs baseline").click()
        panel = page.get_by_role("tabpanel").filter(visible=True)
        panel.get_by_text(example, exact=True).click()
        expect(panel.get_by_label("Reference transcript (corpus clips)")).not_to_have_value("")
        panel.get_by_role("button", name="Transcribe with both").click()
        for system in ("Aligned", "Baseline"):
            expect(panel.get_by_label(f"{system}: TDT")).not_to_have_value("", timeout=120_000)
        expect(panel.get_by_role("gridcell", name="baseline", exact=True)).to_be_visible()
        page.screenshot(path=str(output), full_page=True)
        browser.close()
    return output


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:7861/", help="the running Space")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="the Chromium (or Chrome) executable")
    parser.add_argument("--example", default="test-hi-00000.flac", help="the corpus clip to transcribe")
    parser.add_argument("--output", type=Path, default=SPACE_DIR / "screenshot.png")
    args = parser.parse_args(argv)
    return take_screenshot(args.url, args.output, args.chromium, args.example)


if __name__ == "__main__":
    print(main())
