"""Headless Chromium for the HTML reports: screenshots and DOM dumps of local files.

The browser runs with everything that phones home switched off and its own
throwaway profile; a report page needs no network, and the test proves it.

    python -m lab.report.browser RUN_DIR/matrix.html docs/matrix.png [--size 1400x900]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from lab import exitcodes
from lab.errors import InfraError, LabError, MissingToolError

QUIET_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-default-apps", "--disable-extensions", "--disable-sync",
    "--no-first-run", "--no-default-browser-check", "--metrics-recording-only", "--hide-scrollbars",
    "--force-device-scale-factor=1", "--force-color-profile=srgb", "--disable-breakpad",
    "--disable-client-side-phishing-detection", "--disable-domain-reliability", "--no-pings",
    "--disable-component-extensions-with-background-pages", "--disable-field-trial-config",
    "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,Translate,MediaRouter,"
    "AutofillServerCommunication,CertificateTransparencyComponentUpdater",
)
DEADLINE_S = 60


# Debian's /usr/bin/chromium wrapper turns on remote extensions and API keys
# (/etc/chromium.d), which make the browser call home; the binary behind it does not.
DEBIAN_CHROMIUM = Path("/usr/lib/chromium/chromium")


def chromium_binary() -> str:
    if DEBIAN_CHROMIUM.is_file():
        return str(DEBIAN_CHROMIUM)
    path = shutil.which("chromium")
    if not path:
        raise MissingToolError("chromium", "chromium")
    return path


def chromium_argv(binary: str, page: Path, profile: Path, *, size: tuple[int, int],
                  screenshot: Path | None = None, dump_dom: bool = False, proxy: str | None = None) -> list[str]:
    """The command line for one headless page load. Pure."""
    argv = [binary, *QUIET_FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}"]
    if proxy:
        # Every request that is not a file: URL goes here, loopback included.
        argv += [f"--proxy-server={proxy}", "--proxy-bypass-list=<-loopback>"]
    if screenshot:
        argv.append(f"--screenshot={screenshot}")
    if dump_dom:
        argv.append("--dump-dom")
    return argv + [page.resolve().as_uri()]


def load(page: Path, *, size: tuple[int, int] = (1400, 900), screenshot: Path | None = None,
         dump_dom: bool = False, proxy: str | None = None) -> str:
    """Load `page` once in a fresh headless browser; returns stdout (the DOM with dump_dom)."""
    with tempfile.TemporaryDirectory(prefix="lab-chromium-") as profile:
        argv = chromium_argv(chromium_binary(), page, Path(profile), size=size, screenshot=screenshot,
                             dump_dom=dump_dom, proxy=proxy)
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            raise InfraError(f"chromium did not finish {page} in {DEADLINE_S} s") from None
    if done.returncode != 0 or (screenshot and not screenshot.is_file()):
        last = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise InfraError(f"chromium failed on {page} (exit {done.returncode}): {last[0]}")
    return done.stdout


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(n) for n in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected WIDTHxHEIGHT, e.g. 1400x900") from None
    return width, height


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="screenshot a report page with headless Chromium", allow_abbrev=False)
    parser.add_argument("page", type=Path)
    parser.add_argument("png", type=Path)
    parser.add_argument("--size", type=_size, default=(1400, 900), help="window WIDTHxHEIGHT (default 1400x900)")
    args = parser.parse_args(argv)
    if not args.page.is_file():
        print(f"browser: error: {args.page}: no such file", file=sys.stderr)
        return exitcodes.PROBLEM
    args.png.parent.mkdir(parents=True, exist_ok=True)
    try:
        load(args.page, size=args.size, screenshot=args.png.resolve())
    except LabError as exc:
        print(f"browser: error: {exc}", file=sys.stderr)
        return exitcodes.for_exception(exc)[0]
    print(args.png)
    return exitcodes.OK


if __name__ == "__main__":
    sys.exit(main())
