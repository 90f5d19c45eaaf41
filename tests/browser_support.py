"""What the browser tests share: the distribution's chromium driven by Playwright, and a page
server (``run_labeling.py`` / ``run_editor.py``) in a subprocess on a free localhost port.

A missing playwright or chromium skips the tests with the reason, unless OHLORA_REQUIRE_BROWSER=1
(``.ci/run``), which makes it a failure.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from pipeline.profiles import REPO_ROOT

CHROMIUM = os.environ.get("OHLORA_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def screenshot_path(name: str) -> Path:
    """Where a page test saves its screenshot: the README's copy in ``docs/`` only when asked
    (``OHLORA_SCREENSHOTS=1``, e.g. ``make screenshots``), else a temporary file, so that
    ``make test`` leaves the checkout unchanged."""
    if os.environ.get("OHLORA_SCREENSHOTS") == "1":
        return REPO_ROOT / "docs" / name
    return Path(tempfile.gettempdir()) / f"ohlora-test-{name}"


def missing_browser() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        return f"playwright is not installed ({exc}); pip install -r requirements.txt"
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"chromium not found at {CHROMIUM} (apt-get install chromium, or set OHLORA_CHROMIUM)"
    return None


def launch_browser():
    """Yields a headless chromium (a generator for module fixtures); skips or fails when absent."""
    reason = missing_browser()
    if reason:
        msg = f"browser tests need a browser: {reason}"
        if os.environ.get("OHLORA_REQUIRE_BROWSER") == "1":
            pytest.fail(msg + " (OHLORA_REQUIRE_BROWSER=1)")
        print("SKIPPED: " + msg, file=sys.stderr)
        pytest.skip(msg)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python <script> --port P [args]`` with OHLORA_DATA_ROOT=data_root, ready when ``ready_path`` answers 200."""

    def __init__(self, script: str, data_root: Path, log: Path, ready_path: str, args=()):
        self.script, self.data_root, self.log, self.ready_path, self.args = script, data_root, log, ready_path, list(args)
        self.port = free_port()
        self.proc = None

    def start(self, timeout=180.0):
        env = {**os.environ, "OHLORA_DATA_ROOT": str(self.data_root), "PYTHONUNBUFFERED": "1"}
        self.out = open(self.log, "ab")
        self.proc = subprocess.Popen([sys.executable, self.script, "--port", str(self.port), *self.args], cwd=REPO_ROOT,
                                     env=env, stdout=self.out, stderr=subprocess.STDOUT)
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.script} exited with {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}{self.ready_path}", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{self.script} did not answer within {timeout} s: {self.log.read_text()[-3000:]}")

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self):
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()
