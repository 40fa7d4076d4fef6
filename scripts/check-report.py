#!/usr/bin/env python3
"""Open a ``kubetune report`` page in headless Chromium: check it renders, and screenshot it.

    python scripts/check-report.py report.html                  # writes report.png beside it
    python scripts/check-report.py report.html --png /tmp/r.png --width 1280 --json

Two Chromium runs, both offline and stateless (no sandbox, GPU, QUIC, sync, component
updates or background networking; a throwaway profile):

1. a copy of the page with a small script appended is loaded in a temporary folder, so a page
   that is not self-contained shows up broken; after the load event the script writes, into
   the DOM that ``--dump-dom`` prints, how many ``<img>`` the page has, how many decoded
   (``naturalWidth > 0``) and how tall the page is;
2. the page itself is screenshot at that height (at most 16,000 px), whole, to one PNG.

Prints one line (or one JSON object with ``--json``): images, decoded, page size, screenshot
path. Exit status 0 when the page loaded and every image decoded, 1 when not, 2 when
Chromium is missing (``apt-get install -y chromium``, or set ``$CHROMIUM``). Standard library
only: it runs with any Python 3.11.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
#: Chromium cannot screenshot taller pages in one piece.
MAX_HEIGHT = 16_000
PROBE = """
<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const found = {
    images: images.length,
    decoded: images.filter((img) => img.complete && img.naturalWidth > 0).length,
    width: document.documentElement.scrollWidth,
    height: document.documentElement.scrollHeight,
    title: document.title,
  };
  document.body.setAttribute("data-report-check", JSON.stringify(found));
});
</script>
"""


def chromium() -> str | None:
    """The Chromium binary: $CHROMIUM, else chromium or chromium-browser on PATH."""
    named = os.environ.get("CHROMIUM")
    if named:
        return named if Path(named).is_file() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def run(binary: str, profile: Path, *args: str) -> str:
    proc = subprocess.run(
        [binary, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"chromium exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def probe(binary: str, page: Path, work: Path, width: int) -> dict[str, object]:
    """Load a copy of ``page`` with :data:`PROBE` appended; what the probe found."""
    source = page.read_text(encoding="utf-8")
    at = source.lower().rfind("</body>")
    copy = work / "probe.html"
    copy.write_text(
        source[:at] + PROBE + source[at:] if at >= 0 else source + PROBE, encoding="utf-8"
    )
    dom = run(
        binary,
        work / "profile-probe",
        f"--window-size={width},1000",
        "--virtual-time-budget=10000",
        "--dump-dom",
        copy.as_uri(),
    )
    found = re.search(r'data-report-check="([^"]*)"', dom)
    if found is None:
        raise RuntimeError("the page did not finish loading (no probe result in the DOM)")
    result: dict[str, object] = json.loads(html.unescape(found.group(1)))
    return result


def screenshot(binary: str, page: Path, png: Path, work: Path, width: int, height: int) -> None:
    png.parent.mkdir(parents=True, exist_ok=True)
    run(
        binary,
        work / "profile-shot",
        f"--window-size={width},{height}",
        f"--screenshot={png.resolve()}",
        page.resolve().as_uri(),
    )
    if not png.is_file():
        raise RuntimeError(f"chromium wrote no screenshot to {png}")


def check(page: Path, png: Path, width: int) -> dict[str, object]:
    """Probe the page, then screenshot it whole; the probe's findings and the PNG's path."""
    binary = chromium()
    if binary is None:
        raise FileNotFoundError("chromium not found: apt-get install -y chromium, or set $CHROMIUM")
    with tempfile.TemporaryDirectory(prefix="check-report-") as tmp:
        work = Path(tmp)
        found = probe(binary, page, work, width)
        height = min(max(int(str(found.get("height", 0))), 200), MAX_HEIGHT)
        screenshot(binary, page, png, work, width, height)
    return {**found, "screenshot": str(png)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("page", type=Path, help="the report's HTML file")
    parser.add_argument("--png", type=Path, help="screenshot path (default: PAGE with .png)")
    parser.add_argument("--width", type=int, default=1280, help="window width in CSS pixels")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    args = parser.parse_args(argv)
    if not args.page.is_file():
        parser.error(f"{args.page}: no such file")
    try:
        found = check(args.page, args.png or args.page.with_suffix(".png"), args.width)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    ok = found["images"] == found["decoded"]
    if args.json:
        print(json.dumps({**found, "ok": ok}))
    else:
        print(
            f"{'ok' if ok else 'BROKEN'}: {found['decoded']} of {found['images']} images decoded, "
            f"page {found['width']}×{found['height']} px, screenshot {found['screenshot']}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
