"""The tour in a real browser: JupyterLab headless, Debian's Chromium driven by Playwright.

Runs every cell of a temporary copy of ``notebooks/00_tour.ipynb`` through JupyterLab's menu,
then checks what a reader sees: no error output, each figure drawn once, the explorer widget
redrawing after a slider moves, and the kernel idle at the end. JupyterLab gets a free local port,
a token and temporary settings, workspaces, runtime and config folders (the settings turn off
its news fetch and its windowing, so every cell is in the page; the server's log is kept in
the test's temporary folder as ``jupyterlab.log``). Skips only where no browser can
be used: no ``chromium`` on the PATH (``apt-get install chromium``; ``.ci/run`` installs it) or
no Playwright for Python.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOUR = "notebooks/00_tour.ipynb"
SETTINGS = {  # JupyterLab user settings: no news toast, every cell rendered
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
        {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}
VISIBLE = ".jp-NotebookPanel:not(.lm-mod-hidden)"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _api(base: str, token: str, path: str, method: str = "GET") -> object:
    request = urllib.request.Request(f"{base}/api/{path}", method=method,
                                     headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    return json.loads(body) if body else None


@pytest.fixture
def lab(tmp_path, offline_root):
    """A JupyterLab server on a copy of the notebooks; yields (base URL, token, chromium path)."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("no chromium on the PATH: install Debian's package "
                    "(apt-get install -y chromium; .ci/run does this)")
    pytest.importorskip("playwright.sync_api", reason="playwright is in the [test] extra")
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    tour = json.loads((ROOT / TOUR).read_text())
    for cell in tour["cells"]:                 # a fresh notebook: every prompt shows [ ]
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    (tmp_path / TOUR).write_text(json.dumps(tour))
    for name, values in SETTINGS.items():
        path = tmp_path / "settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    token, port = uuid.uuid4().hex, _free_port()
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "STABNB_FIGURES_DIR": str(tmp_path / "figures"),
           "STABNB_PROFILE": "smoke", "STABNB_PROGRESS": "0",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("MPLBACKEND", None)                     # the kernel's own default: the inline backend
    log = (tmp_path / "jupyterlab.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
         f"--port={port}", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={tmp_path}"],
        env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                _api(base, token, "status")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start on port {port} "
                                f"(exit code {server.poll()})")
                time.sleep(0.5)
        yield base, token, chromium
    finally:
        try:
            for kernel in _api(base, token, "kernels"):       # type: ignore[union-attr]
                _api(base, token, f"kernels/{kernel['id']}", method="DELETE")
        except OSError:
            pass
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _prompts(page) -> list[str]:
    return page.locator(f"{VISIBLE} .jp-CodeCell .jp-InputPrompt").all_inner_texts()


def _status(page) -> str | None:
    return page.locator(f"{VISIBLE} .jp-Notebook-ExecutionIndicator").first.get_attribute(
        "data-status")


def _errors(page) -> list[str]:
    return page.locator(f"{VISIBLE} .jp-OutputArea-output"
                        "[data-mime-type='application/vnd.jupyter.stderr']").all_inner_texts()


def _wait_until_run(page, timeout: float) -> None:
    """Every code cell numbered, none ``[*]``, the kernel idle, three polls in a row; fails early
    on error output (Run All stops at an error and the later cells stay ``[ ]``)."""
    deadline, quiet = time.monotonic() + timeout, 0
    while quiet < 3:
        errors = _errors(page)
        assert not errors, f"error output in the browser: {errors}"
        if time.monotonic() > deadline:
            pytest.fail(f"not every cell ran within {timeout:.0f} s; prompts {_prompts(page)}")
        done = all(re.fullmatch(r"\[\d+\]:", p.strip()) for p in _prompts(page))
        quiet = quiet + 1 if done and _status(page) == "idle" else 0
        time.sleep(0.5)


def _kernel_ready(page, timeout: float) -> None:
    """Wait for an idle kernel, accepting the kernel dialog JupyterLab may open first."""
    deadline, dialog = time.monotonic() + timeout, page.locator(".jp-Dialog .jp-mod-accept")
    while _status(page) != "idle" or dialog.count():
        if dialog.count():
            dialog.first.click()
        if time.monotonic() > deadline:
            pytest.fail(f"the kernel did not start within {timeout:.0f} s")
        time.sleep(0.5)


def _run_all(page, attempts: int = 3) -> None:
    """Run > Run All Cells, again if no cell was queued: just after the kernel first reports
    idle, JupyterLab can drop the request while the kernel connection settles."""
    for _ in range(attempts):
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if any(p.strip() != "[ ]:" for p in _prompts(page)):
                return
            time.sleep(0.5)
        _kernel_ready(page, timeout=30)
    pytest.fail(f"Run All Cells queued nothing after {attempts} attempts")


def test_the_tour_runs_in_jupyterlab(lab):
    from playwright.sync_api import sync_playwright

    base, token, chromium = lab
    notebook = json.loads((ROOT / TOUR).read_text())
    sources = ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"]
    drawing = [bool(re.search(r"plotting\.plot_|_explorer\(", s)) for s in sources]
    started = time.monotonic()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{base}/lab/workspaces/test-{uuid.uuid4().hex[:8]}/tree/{TOUR}"
                      f"?reset&token={token}")
            page.wait_for_selector(f"{VISIBLE} .jp-Cell", timeout=90_000)
            _kernel_ready(page, timeout=90)
            _run_all(page)
            _wait_until_run(page, timeout=300)

            cells = page.locator(f"{VISIBLE} .jp-CodeCell")
            assert cells.count() == len(sources)
            images = [cells.nth(i).locator(".jp-OutputArea img").count() for i in range(len(sources))]
            assert images == [int(d) for d in drawing], "each figure drawn exactly once"

            explorer = cells.nth(next(i for i, s in enumerate(sources) if "_explorer(" in s))
            readout = explorer.locator(".jupyter-widgets .widget-html-content").first
            image = explorer.locator(".jupyter-widgets img").first
            before = (readout.inner_text(), image.get_attribute("src"))
            slider = explorer.locator(".jupyter-widgets .noUi-handle, .jupyter-widgets input[type=range]").first
            slider.focus()
            slider.press("ArrowRight")
            page.wait_for_function(
                "([element, text]) => element.innerText !== text",
                arg=[readout.element_handle(), before[0]], timeout=60_000)
            assert image.get_attribute("src") != before[1], "the figure was not redrawn"
            _wait_until_run(page, timeout=60)
        finally:
            browser.close()
    print(f"tour in the browser: {time.monotonic() - started:.0f} s")
