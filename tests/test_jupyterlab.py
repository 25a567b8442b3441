"""The notebooks open in JupyterLab as a learner opens them.

Starts `jupyter lab` on 127.0.0.1 (free port, random token, no browser of its own) over a copy of
`nbs/` in pytest's tmp dir, opens a chapter in headless Chromium driven by Playwright, waits for its
cells and an idle kernel, checks its title, runs a typed code cell and sees its output, checks no
dialog is shown, saves a screenshot to `.artifacts/screenshots/`, and shuts the server down. Chapter 07's sampling
knobs (ipywidgets, whose JupyterLab 4 extension is prebuilt) are built in a typed cell, and a slider moved from the
keyboard redraws their output.
Skipped only where Chromium or Playwright is missing.
"""

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from _browser import chromium, chromium_path
from conftest import ARTIFACTS, NBS

SCREENSHOTS = ARTIFACTS / "screenshots"

SERVER_START_TIMEOUT = 60  # seconds for `jupyter lab` to answer /api/status
PAGE_TIMEOUT_MS = 45_000  # JupyterLab's first load, notebook cells and a started kernel
STEP_TIMEOUT_MS = 10_000  # the page answering a click or a key
OUTPUT_TIMEOUT_MS = 20_000  # a typed cell's output


def chapter_notebook(nbs: Path) -> Path:
    "The first numbered chapter (`NN_*.ipynb`), else `index.ipynb`."
    chapters = sorted(nbs.glob("[0-9][0-9]_*.ipynb"))
    return chapters[0] if chapters else nbs / "index.ipynb"


def chapter_title(nb_path: Path) -> str:
    "The text of the notebook's first markdown `# ` heading, as it reads once rendered."
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        src = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        for line in src.splitlines():
            if line.startswith("# "):
                title = line[2:].strip().rstrip("#").strip()
                title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)  # [text](url) -> text
                return re.sub(r"[*`]", "", title)  # emphasis and code marks are not displayed
    raise AssertionError(f"{nb_path.name} has no markdown `# ` heading to serve as its title")


def notebook_metadata(nb_path: Path) -> dict:
    return json.loads(nb_path.read_text(encoding="utf-8")).get("metadata", {})


def open_notebook(page, base: str, token: str, nb: Path):
    "Open `nb` in JupyterLab and wait for its cells and an idle kernel; return (panel, notebook, dialog) locators."
    from playwright.sync_api import expect

    page.goto(f"{base}/lab/tree/{nb.name}?token={token}", wait_until="domcontentloaded")
    # The notebook's cells are displayed and its kernel is idle. The execution indicator says "idle" even with no
    # kernel, so first wait for the toolbar to name a kernel; a dialog (such as "Select Kernel" for a notebook
    # without kernelspec metadata) fails the test at once.
    panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
    notebook = panel.locator(".jp-Notebook")
    dialog = page.locator(".jp-Dialog")
    expect(notebook.locator(".jp-Cell").first).to_be_visible(timeout=PAGE_TIMEOUT_MS)
    kernel = panel.locator(".jp-Toolbar-kernelName", has_text=re.compile(r"^(?!\s*No Kernel\s*$).+"))
    expect(kernel.or_(dialog).first).to_be_visible(timeout=PAGE_TIMEOUT_MS)
    assert dialog.count() == 0, (
        f"JupyterLab shows a dialog instead of starting {nb.name}'s kernel: {dialog.all_inner_texts()}"
        + (" (the notebook has no kernelspec metadata)" if "kernelspec" not in notebook_metadata(nb) else "")
    )
    indicator = panel.locator(".jp-Notebook-ExecutionIndicator")
    expect(indicator).to_have_attribute("data-status", "idle", timeout=PAGE_TIMEOUT_MS)
    return panel, notebook, dialog


def run_typed_cell(page, notebook, code: str):
    """Insert a code cell below the notebook's title, type `code` into it, run it (Shift+Enter); return the cell.

    Select the title's cell, insert a code cell below it (Escape, b), type into it and press Shift+Enter. One line
    is typed key by key; several are inserted as typed text, so the editor's automatic indentation and closing
    brackets do not change them. The cell is found by its first line, not by counting cells: JupyterLab attaches a long
    notebook's cells to the page a few at a time.
    """
    from playwright.sync_api import expect

    heading = notebook.locator(".jp-RenderedMarkdown h1").first
    heading.click(position={"x": 2, "y": 2})
    page.keyboard.press("Escape")
    page.keyboard.press("b")
    new = notebook.locator(".jp-CodeCell.jp-mod-active")
    expect(new).to_have_count(1, timeout=STEP_TIMEOUT_MS)
    expect(new.locator(".jp-InputArea-editor")).to_have_text("", timeout=STEP_TIMEOUT_MS)
    page.keyboard.press("Enter")
    expect(new.locator(".cm-editor.cm-focused")).to_be_visible(timeout=STEP_TIMEOUT_MS)
    if "\n" in code:
        page.keyboard.insert_text(code)
    else:
        page.keyboard.type(code)
    source = code.replace("\n", "")  # the editor's text content joins its lines
    expect(new.locator(".jp-InputArea-editor")).to_have_text(source, timeout=STEP_TIMEOUT_MS)
    page.keyboard.press("Shift+Enter")
    first_line = re.compile("^" + re.escape(code.split("\n")[0]) + ("$" if "\n" not in code else ""))
    return notebook.locator(".jp-CodeCell", has=page.locator(".jp-InputArea-editor", has_text=first_line)).first


@contextmanager
def lab_page(browser_path, shot: Path, log: Path):
    """A page of headless Chromium for JupyterLab; yields (page, uncaught page errors).

    On a failure the server log's tail is printed (pytest shows it with the failure); a screenshot is saved to
    `shot` either way.
    """
    shot.parent.mkdir(parents=True, exist_ok=True)
    with chromium(browser_path) as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(STEP_TIMEOUT_MS)
        page.set_default_navigation_timeout(PAGE_TIMEOUT_MS)
        page_errors = []
        page.on("pageerror", lambda e: page_errors.append(str(e)))
        try:
            yield page, page_errors
        except BaseException:
            print(f"--- jupyter lab log (tail) ---\n{log_tail(log)}")
            raise
        finally:
            page.screenshot(path=str(shot))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(log: Path, n: int = 60) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:])
    except OSError as e:
        return f"(no log: {e})"


def stop(proc: subprocess.Popen) -> None:
    "SIGTERM the server (it shuts its kernels down), then kill its process group if it lingers."
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the server's own session: stray kernels included
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait(timeout=10)


@pytest.fixture
def browser_path():
    pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
    path = chromium_path()
    if path is None:
        pytest.skip("Chromium not found (chromium, chromium-browser or $RNN_TUTORIAL_CHROMIUM)")
    return path


@pytest.fixture
def lab(tmp_path):
    "A `jupyter lab` over a copy of nbs/ with Jupyter's state in tmp_path; yields (base_url, token, root, log)."
    root = tmp_path / "nbs"
    shutil.copytree(NBS, root, symlinks=True, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "_proc"))
    state = tmp_path / "jupyter"
    env = dict(os.environ)
    env.update(
        JUPYTER_CONFIG_DIR=str(state / "config"),
        JUPYTER_DATA_DIR=str(state / "data"),  # kernel spec and lab assets still come from sys.prefix
        JUPYTER_RUNTIME_DIR=str(state / "runtime"),
        IPYTHONDIR=str(state / "ipython"),
        JUPYTER_PLATFORM_DIRS="0",
        PYTHONUNBUFFERED="1",
    )
    env.pop("JUPYTERLAB_SETTINGS_DIR", None)
    env.pop("JUPYTERLAB_WORKSPACES_DIR", None)
    # Never ask to fetch Jupyter news nor check for updates: no toast over the notebook, no outside request.
    settings = state / "config" / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )

    port, token = free_port(), secrets.token_hex(16)
    log = tmp_path / "jupyterlab.log"
    cmd = [
        sys.executable, "-m", "jupyter", "lab",
        "--no-browser", "--allow-root",
        "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
        f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}",
        "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an http_proxy
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited with {proc.returncode}:\n{log_tail(log)}")
            try:
                with direct.open(f"{base}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"jupyter lab did not answer within {SERVER_START_TIMEOUT} s:\n{log_tail(log)}")
            time.sleep(0.25)
        yield base, token, root, log
    finally:
        stop(proc)


def test_chapter_opens_and_runs_in_jupyterlab(browser_path, lab):
    from playwright.sync_api import expect

    base, token, root, log = lab
    nb = chapter_notebook(root)
    title = chapter_title(nb)
    shot = SCREENSHOTS / f"jupyterlab-{nb.stem}.png"

    with lab_page(browser_path, shot, log) as (page, page_errors):
        panel, notebook, dialog = open_notebook(page, base, token, nb)

        # The chapter's title is on the page.
        heading = notebook.locator(".jp-RenderedMarkdown h1").first
        expect(heading).to_be_visible(timeout=STEP_TIMEOUT_MS)
        expect(heading).to_contain_text(title, timeout=STEP_TIMEOUT_MS)

        # Run a code cell typed in the browser, below the title, and see its output.
        ran = run_typed_cell(page, notebook, "print(6 * 7)")
        output = ran.locator(".jp-OutputArea-output")
        expect(output.first).to_have_text(re.compile(r"^\s*42\s*$"), timeout=OUTPUT_TIMEOUT_MS)
        expect(ran.locator(".jp-InputPrompt")).to_have_text(re.compile(r"\[\d+\]"), timeout=STEP_TIMEOUT_MS)
        stderr = ran.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
        assert stderr.count() == 0, f"the cell wrote to stderr or raised: {output.all_inner_texts()}"

        # No error dialog (nor any other dialog) over the notebook.
        assert dialog.count() == 0, f"dialog shown: {dialog.all_inner_texts()}"
        assert not page_errors, f"uncaught errors in the page: {page_errors}"


def test_figures_show_in_jupyterlab(browser_path, lab):
    "The home page's diagram (a markdown image of nbs/figures/) loads in JupyterLab, as it does on the site."
    from playwright.sync_api import expect

    base, token, root, log = lab
    shot = SCREENSHOTS / "jupyterlab-index-figure.png"
    with lab_page(browser_path, shot, log) as (page, _):
        page.goto(f"{base}/lab/tree/index.ipynb?token={token}", wait_until="domcontentloaded")
        panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
        image = panel.locator('.jp-RenderedMarkdown img[src*="rnn_unrolled.svg"]').first
        expect(image).to_be_visible(timeout=PAGE_TIMEOUT_MS)
        image.scroll_into_view_if_needed()
        page.wait_for_function("img => img.complete", arg=image.element_handle(), timeout=STEP_TIMEOUT_MS)
        width = image.evaluate("img => img.naturalWidth")
        assert width > 0, f"figures/rnn_unrolled.svg did not load in JupyterLab (naturalWidth {width})"


# The sampling knobs of chapter 07 over a tiny model: a random bigram table over nine characters. Running the
# chapter's own cells would first train its GRU, for one and a half to two minutes on 2 CPU cores; the widget is
# the one the chapter displays (`sampling_knobs`), given tiny inputs, so the test trains nothing.
KNOBS_CELL = """\
from rnn_tutorial.apps.generation import sampling_knobs
import numpy as np
from rnn_tutorial.data import Vocab
vocab = Vocab("abcdefgh ")
W = np.random.default_rng(0).normal(0, 2, (len(vocab), len(vocab)))
step = lambda state, ids: (W[ids] - np.logaddexp.reduce(W[ids], axis=1, keepdims=True), state)
display(sampling_knobs(step, vocab, "a ", temperature=0.7, length=60))"""


def test_sampling_knobs_in_jupyterlab(browser_path, lab):
    "Chapter 07's temperature slider, moved in the browser, redraws the distribution and the sample."
    from playwright.sync_api import expect

    base, token, root, log = lab
    nb = next(iter(sorted(root.glob("07_*.ipynb"))))
    shot = SCREENSHOTS / f"jupyterlab-{nb.stem}-knobs.png"
    with lab_page(browser_path, shot, log) as (page, page_errors):
        panel, notebook, dialog = open_notebook(page, base, token, nb)
        ran = run_typed_cell(page, notebook, KNOBS_CELL)

        # The widget is drawn (by the JupyterLab 4 extension of ipywidgets, no build step): two sliders and
        # an output with the distribution's plot and the sample's text.
        sliders = ran.locator(".widget-slider")
        expect(sliders).to_have_count(2, timeout=OUTPUT_TIMEOUT_MS)
        temperature = sliders.filter(has_text="temperature")
        readout = temperature.locator(".widget-readout")
        expect(readout).to_have_text("0.70")
        shown = ran.locator(".widget-output")
        image = shown.locator("img")
        expect(image).to_have_count(1, timeout=OUTPUT_TIMEOUT_MS)
        expect(shown).to_contain_text("a ", timeout=OUTPUT_TIMEOUT_MS)
        text_before, image_before = shown.inner_text(), image.get_attribute("src")

        # Move the slider from the keyboard, as a user can: End takes it to its maximum, 2.
        temperature.locator(".noUi-handle").focus()
        page.keyboard.press("End")
        expect(readout).to_have_text("2.00")
        expect(shown).not_to_have_text(text_before, timeout=OUTPUT_TIMEOUT_MS)
        expect(image).not_to_have_attribute("src", image_before, timeout=OUTPUT_TIMEOUT_MS)  # drawn again
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
        ran.scroll_into_view_if_needed()
        stderr = ran.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
        assert stderr.count() == 0, f"the cell wrote to stderr or raised: {ran.inner_text()}"
        assert dialog.count() == 0, f"dialog shown: {dialog.all_inner_texts()}"
        assert not page_errors, f"uncaught errors in the page: {page_errors}"


# Chapter 10's text box over an untrained attention model (the chapter trains its own for over a minute): the
# heat-map is meaningless, but typing a date and pressing Enter must translate it and draw the map again. The
# untrained model writes the padding symbol, which fonts lack: matplotlib's warnings about it are silenced.
ATTENTION_CELL = """\
from rnn_tutorial.apps.translation import SOURCE_VOCAB, TARGET_VOCAB, Seq2Seq, Translator, attention_knobs
import warnings
warnings.filterwarnings("ignore", "Glyph")
tr = Translator(Seq2Seq(len(SOURCE_VOCAB), len(TARGET_VOCAB), units=8, embed_dim=4))
display(attention_knobs(tr, "3 Mar 2021", options=["1 Jan 2000"]))"""


def test_attention_knob_in_jupyterlab(browser_path, lab):
    "Chapter 10's date box: a date typed in the browser, then Enter, redraws the attention heat-map."
    from playwright.sync_api import expect

    base, token, root, log = lab
    nb = next(iter(sorted(root.glob("10_*.ipynb"))))
    shot = SCREENSHOTS / f"jupyterlab-{nb.stem}-knob.png"
    with lab_page(browser_path, shot, log) as (page, page_errors):
        panel, notebook, dialog = open_notebook(page, base, token, nb)
        ran = run_typed_cell(page, notebook, ATTENTION_CELL)
        box = ran.locator(".widget-text input")  # a Combobox is a text box with a list
        expect(box).to_have_value("3 Mar 2021", timeout=2 * OUTPUT_TIMEOUT_MS)  # TensorFlow is imported first
        image = ran.locator(".widget-output img")
        expect(image).to_have_count(1, timeout=OUTPUT_TIMEOUT_MS)
        image_before = image.get_attribute("src")

        box.fill("Wednesday 31 Dec 1999")
        box.press("Enter")
        expect(image).not_to_have_attribute("src", image_before, timeout=OUTPUT_TIMEOUT_MS)  # drawn again
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
        stderr = ran.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
        assert stderr.count() == 0, f"the cell wrote to stderr or raised: {ran.inner_text()}"
        assert dialog.count() == 0, f"dialog shown: {dialog.all_inner_texts()}"
        assert not page_errors, f"uncaught errors in the page: {page_errors}"


def test_gradient_norm_knobs_in_jupyterlab(browser_path, lab):
    """Chapter 04's own knob, as a learner meets it: Run All Cells, then the spectral-radius slider, moved in the
    browser, redraws the gradient-norm plot. The chapter runs in about a minute on 2 CPU cores, so its own cells
    are run here, not a stand-in."""
    from playwright.sync_api import expect

    base, token, root, log = lab
    # Every cell attached to the page (JupyterLab 4 attaches a long notebook's cells only as they scroll into view).
    tracker = root.parent / "jupyter" / "config" / "lab" / "user-settings" / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True, exist_ok=True)
    (tracker / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    nb = next(iter(sorted(root.glob("04_*.ipynb"))))
    shot = SCREENSHOTS / f"jupyterlab-{nb.stem}-knobs.png"
    with lab_page(browser_path, shot, log) as (page, page_errors):
        panel, notebook, dialog = open_notebook(page, base, token, nb)
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        knob = notebook.locator(".jp-CodeCell", has_text="widgets.interactive")
        radius = knob.locator(".widget-slider", has_text="radius")
        expect(radius).to_have_count(1, timeout=240_000)  # the chapter runs up to the knob first
        # ... and on to its end: the kernel runs the knob's redraw only after every queued cell ("[*]").
        queued = notebook.locator(".jp-InputPrompt", has_text="[*]")
        expect(queued).to_have_count(0, timeout=240_000)
        readout = radius.locator(".widget-readout")
        expect(readout).to_have_text("1.00")
        image = knob.locator(".widget-output img")
        expect(image).to_have_count(1, timeout=OUTPUT_TIMEOUT_MS)
        before = image.get_attribute("src")
        radius.scroll_into_view_if_needed()
        radius.locator(".noUi-handle").focus()
        page.keyboard.press("End")  # the slider's maximum, radius 3: the norms now grow with distance
        expect(readout).to_have_text("3.00")
        expect(image).not_to_have_attribute("src", before, timeout=OUTPUT_TIMEOUT_MS)
        stderr = knob.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
        assert stderr.count() == 0, f"the knob's cell wrote to stderr or raised: {knob.inner_text()[:2000]}"
        assert dialog.count() == 0, f"dialog shown: {dialog.all_inner_texts()}"
        assert not page_errors, f"uncaught errors in the page: {page_errors}"
