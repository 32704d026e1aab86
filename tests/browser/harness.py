"""A real JupyterLab / Notebook 7 server on loopback, driven by headless Debian chromium via Playwright.

Shared by tests/browser/test_jupyterlab.py and benchmarks/widget_latency.py. No browser is ever
downloaded: Playwright launches the system chromium (``/usr/bin/chromium``, or ``$MASSACT_CHROMIUM``).
Everything the server writes (settings, workspaces, runtime files) lives in a temporary directory,
so a user's own Jupyter configuration cannot change what the test sees.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking"]

# Console errors that say nothing about our views. None is needed in JupyterLab 4.6 (every console
# error and page error fails the tests); add one only with the reason it is harmless.
HARMLESS_CONSOLE: tuple[str, ...] = ()

# Notebook 7.6's own shortcuts extension (notebook_core.*.js) reads the settings schema of a plugin it
# has not registered when a settings file loads; it throws on /tree before any notebook or view loads.
HARMLESS_NOTEBOOK7 = ("Cannot read properties of undefined (reading 'schema') @ notebook_core.",)


def chromium_path() -> str | None:
    p = os.environ.get("MASSACT_CHROMIUM") or "/usr/bin/chromium"
    return p if Path(p).exists() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent():
    """Linux: the server gets SIGTERM when the test process dies, even when it is killed."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Server:
    """`jupyter lab` (app="lab") or `jupyter notebook` (app="notebook") over ``root``."""

    def __init__(self, root: Path, app: str = "lab", log: Path | None = None):
        self.root, self.app = Path(root), app
        self.port, self.token = free_port(), secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        self.home = Path(tempfile.mkdtemp(prefix="massact-jupyter-"))
        self.log = log or self.home / "server.log"
        self.proc = None

    def _settings(self):
        # Plain (non-windowed) notebooks: every cell's output is attached to the DOM, so views below
        # the fold render too. No news / update checks (no network, no pop-up over the notebook).
        s = self.home / "settings"
        for name, value in {
            "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
            "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
                {"fetchNews": "false", "checkForUpdates": False},
        }.items():
            (s / name).parent.mkdir(parents=True, exist_ok=True)
            (s / name).write_text(json.dumps(value))
        return s

    def start(self, timeout: float = 90):
        env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                   JUPYTER_CONFIG_DIR=str(self.home / "config"), JUPYTER_RUNTIME_DIR=str(self.home / "runtime"),
                   JUPYTER_DATA_DIR=str(self.home / "data"), IPYTHONDIR=str(self.home / "ipython"),
                   JUPYTER_PLATFORM_DIRS="1", MPLBACKEND="Agg")
        settings = self._settings()
        cls = "LabApp" if self.app == "lab" else "JupyterNotebookApp"
        cmd = [sys.executable, "-m", "jupyterlab" if self.app == "lab" else "notebook",
               "--no-browser", "--ip=127.0.0.1", f"--port={self.port}", "--port-retries=0",
               f"--ServerApp.root_dir={self.root}", f"--IdentityProvider.token={self.token}",
               "--ServerApp.disable_check_xsrf=True", "--ServerApp.allow_remote_access=False",
               f"--{cls}.expose_app_in_browser=True", f"--{cls}.user_settings_dir={settings}",
               f"--{cls}.workspaces_dir={self.home / 'workspaces'}", "--ServerApp.terminals_enabled=False"]
        if self.app == "lab":
            cmd.append("--LabApp.extension_manager=readonly")  # no PyPI queries from the server
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")  # CI containers run as root
        self._logf = open(self.log, "w")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._logf, stderr=subprocess.STDOUT,
                                     cwd=self.root, start_new_session=True, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter {self.app} exited:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/status?token={self.token}", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"jupyter {self.app} did not answer in {timeout} s:\n{self.log.read_text()[-3000:]}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the server and the kernels it started
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self.proc:
            self._logf.close()
        shutil.rmtree(self.home, ignore_errors=True)

    def page_url(self, path: str) -> str:
        if self.app == "lab":  # a fresh workspace per page: no tab of an earlier page is restored
            return f"{self.url}/lab/workspaces/{secrets.token_hex(4)}/tree/{path}?token={self.token}"
        return f"{self.url}/notebooks/{path}?token={self.token}"

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


@contextmanager
def browser_page(viewport=(1400, 1000), log: Path | None = None):
    """A fresh headless chromium page; ``page.js_errors`` collects page errors and console errors
    (written to ``log`` at the end, allowed ones included)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            page.js_errors = []
            page.on("pageerror", lambda e: page.js_errors.append(f"pageerror: {e} @ {_where(e.stack)}"))
            page.on("console", lambda m: m.type == "error" and page.js_errors.append(f"console: {m.text}"))
            yield page
        finally:
            if log is not None:
                Path(log).write_text("".join(e + "\n" for e in page.js_errors))
            browser.close()


def _where(stack) -> str:
    """The script file of the first frame of a JavaScript stack (to tell Jupyter's code from ours)."""
    for line in (stack or "").splitlines()[1:]:
        if "(" in line or "at " in line:
            return line.strip().split("/")[-1].split("?")[0].rstrip(")")
    return "?"


def real_errors(page, allow=()):
    """The collected JavaScript errors except the harmless ones (HARMLESS_CONSOLE and ``allow``)."""
    return [e for e in page.js_errors if not any(h in e for h in (*HARMLESS_CONSOLE, *allow))]


def open_notebook(page, server: Server, path: str, timeout: float = 120):
    """Open ``path`` and wait until its kernel is connected and idle."""
    page.goto(server.page_url(path), timeout=timeout * 1000)
    page.wait_for_function(JS_NOTEBOOK_READY, arg=path, timeout=timeout * 1000, polling=250)
    page.evaluate(JS_TAG_CELLS)


def run_all(page, timeout: float = 600):
    """Run every cell (the `notebook:run-all-cells` command) and wait until that finishes (it stops at
    the first error) and the kernel is idle; return the errors and the cells left unexecuted."""
    page.evaluate("""() => { window.__mvRunAll = null;
      window.jupyterapp.commands.execute('notebook:run-all-cells').then(
        ok => { window.__mvRunAll = {ok}; }, e => { window.__mvRunAll = {error: String(e)}; }); }""")
    page.wait_for_function(f"""() => {{ const w = {JS_PANEL};
        return window.__mvRunAll !== null && w.sessionContext.session.kernel.status === 'idle'; }}""",
                           timeout=timeout * 1000, polling=300)
    page.evaluate(JS_TAG_CELLS)
    done = page.evaluate("window.__mvRunAll")
    return ([f"run-all-cells failed: {done['error']}"] if "error" in done else []) + page.evaluate(JS_CELL_ERRORS)


# ---- JavaScript run in the page -------------------------------------------------------------------

JS_PANEL = "(() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;" \
           " return w && w.content && w.sessionContext ? w : null; })()"

JS_NOTEBOOK_READY = f"""(path) => {{
  const w = {JS_PANEL};
  if (!w || !w.context.isReady || w.context.path !== path) return false;
  const k = w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle' && k.connectionStatus === 'connected';
}}"""

# data-cell-index on every cell node, data-tour-view=<name> on cells tagged "view:<name>".
JS_TAG_CELLS = f"""() => {{
  const w = {JS_PANEL};
  w.content.widgets.forEach((c, i) => {{
    c.node.dataset.cellIndex = i;
    for (const t of (c.model.getMetadata('tags') || []))
      if (t.startsWith('view:')) c.node.dataset.tourView = t.slice(5);
  }});
}}"""

JS_CELL_ERRORS = f"""() => {{
  const w = {JS_PANEL}, out = [];
  w.content.widgets.forEach((c, i) => {{
    if (c.model.type !== 'code') return;
    for (let j = 0; j < c.model.outputs.length; j++) {{
      const o = c.model.outputs.get(j).toJSON();
      if (o.output_type === 'error') out.push(`cell ${{i}}: ${{o.ename}}: ${{o.evalue}}`);
    }}
  }});
  return out;
}}"""

# What a view has drawn: canvases (pixels), images, SVG and text. Non-blank = some canvas/image
# has two different pixel colours, or there is SVG/text content.
JS_FINGERPRINT = """(root) => {
  const out = {canvases: [], images: [], svg: '', text: '', nonblank: 0};
  const probe = document.createElement('canvas');
  const varied = (src, w, h) => {
    if (!w || !h) return false;
    probe.width = Math.min(w, 400); probe.height = Math.min(h, 400);
    const ctx = probe.getContext('2d', {willReadFrequently: true});
    ctx.clearRect(0, 0, probe.width, probe.height);
    try { ctx.drawImage(src, 0, 0, probe.width, probe.height); } catch (e) { return false; }
    const d = ctx.getImageData(0, 0, probe.width, probe.height).data;
    for (let i = 4; i < d.length; i += 4)
      if (d[i] !== d[0] || d[i+1] !== d[1] || d[i+2] !== d[2] || d[i+3] !== d[3]) return true;
    return false;
  };
  for (const c of root.querySelectorAll('canvas')) {
    let url = ''; try { url = c.toDataURL(); } catch (e) {}
    out.canvases.push(url);
    if (varied(c, c.width, c.height)) out.nonblank++;
  }
  for (const im of root.querySelectorAll('img')) {
    out.images.push(im.src.length + ':' + im.src.slice(-64));
    if (im.complete && varied(im, im.naturalWidth, im.naturalHeight)) out.nonblank++;
  }
  for (const s of root.querySelectorAll('svg')) out.svg += s.outerHTML;
  out.text = root.innerText;
  return out;
}"""


def fingerprint(locator) -> dict:
    return locator.evaluate(JS_FINGERPRINT)


# Move a range input of a view one step (the ``index``-th match of ``selector``: anywidget views, plain HTML)
# and fire input + change, as a user's drag does; returns "<class>=<new value>" or None when there is none.
JS_MOVE_SLIDER = """(root, [selector, index]) => {
  const r = root.querySelectorAll(selector)[index];
  if (!r || r.disabled) return null;
  const lo = +r.min || 0, hi = r.max === '' ? 100 : +r.max, st = +r.step || 1;
  let v = +r.value + st; if (v > hi) v = lo;
  r.value = String(v);
  r.dispatchEvent(new Event('input', {bubbles: true}));
  r.dispatchEvent(new Event('change', {bubbles: true}));
  return r.className + '=' + r.value;
}"""


def move_slider(locator, selector: str = "input[type=range]", index: int = 0) -> str | None:
    moved = locator.evaluate(JS_MOVE_SLIDER, [selector, index])
    if moved is None and selector == "input[type=range]" and index == 0:  # ipywidgets: noUiSlider answers the keyboard
        handle = locator.locator(".noUi-handle").first
        if handle.count():
            handle.focus()
            handle.press("ArrowRight")
            moved = "nouislider"
    return moved


def view_root(page, name: str):
    """The rendered root of the view in the cell tagged ``view:<name>`` (after :func:`open_notebook`)."""
    return page.locator(f"[data-tour-view={name}] .jp-OutputArea-output .massact-view").first


def run_cells(page, indices, timeout: float = 300):
    """Run only the cells at ``indices`` (in order) with the `notebook:run-cell` command."""
    for i in indices:
        page.evaluate(f"""async (i) => {{ const w = {JS_PANEL}; w.content.activeCellIndex = i;
            await window.jupyterapp.commands.execute('notebook:run-cell'); }}""", i)
    page.wait_for_function(f"""(idx) => {{ const w = {JS_PANEL};
        return w.sessionContext.session.kernel.status === 'idle' &&
               idx.every(i => w.content.widgets[i].model.executionCount !== null); }}""",
                           arg=list(indices), timeout=timeout * 1000, polling=300)
    page.evaluate(JS_TAG_CELLS)
    return page.evaluate(JS_CELL_ERRORS)


def screenshot_notebook(page, path, max_height: int = 12000):
    """The whole notebook in one image: Lab scrolls inside the notebook panel, so a full-page
    screenshot would show one screen; grow the viewport to the notebook's height first."""
    size = page.viewport_size
    h = page.evaluate("""() => { const s = [...document.querySelectorAll('.jp-WindowedPanel-outer, .jp-Notebook')];
                                 s.forEach(e => { e.scrollTop = 0; }); window.scrollTo(0, 0);
                                 return Math.max(...s.map(e => e.scrollHeight), 0); }""")
    page.set_viewport_size({"width": size["width"], "height": int(min(max_height, max(size["height"], h + 250)))})
    page.wait_for_timeout(500)
    page.screenshot(path=str(path))
    page.set_viewport_size(size)
