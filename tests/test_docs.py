"""The docs site builds offline and every page works in a real browser.

Quarto cannot be installed on our machines, so this renders the site the way DESIGN.md describes:
the notebooks are processed as `nbdev_docs` processes them for Quarto (`nbdev.serve.proc_nbs`, after
`refresh_quarto_yml` and `nbdev_sidebar`), then `smalldocs`, which reads the same `_quarto.yml`,
renders the site. Links and images are checked on the HTML; then headless Chromium opens every
page with KaTeX answered from a local copy and every other outside request blocked.
"""
import functools
import http.server
import json
import re
import shutil
import subprocess
import sys
import tarfile
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import pytest

from _browser import chromium, chromium_path
from conftest import ARTIFACTS, NBS, ROOT

# Warnings smalldocs prints for Quarto settings it does not need; anything else fails the build.
KNOWN_WARNINGS = (
    "format commonmark is not built",
    "format.html.keep-md is ignored",
    "output-file is not read by smalldocs",
)


def notebooks() -> list[Path]:
    "The notebooks that become pages."
    return sorted(p for p in NBS.glob("*.ipynb") if not p.name.startswith("_"))


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    "Build the docs offline into a temporary folder and return the site's folder."
    work = tmp_path_factory.mktemp("docs")
    for name in ("settings.ini", "_quarto.yml"):
        shutil.copy2(ROOT / name, work / name)
    shutil.copytree(NBS, work / "nbs", symlinks=True, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "_proc"))
    shutil.copytree(ROOT / "rnn_tutorial", work / "rnn_tutorial", ignore=shutil.ignore_patterns("__pycache__"))
    prep = (
        "from nbdev.quarto import refresh_quarto_yml, nbdev_sidebar\n"
        "from nbdev.serve import proc_nbs\n"
        "refresh_quarto_yml(); nbdev_sidebar.__wrapped__(); print(proc_nbs(n_workers=0))\n"
    )
    proc = subprocess.run([sys.executable, "-c", prep], cwd=work, capture_output=True, text=True)
    assert proc.returncode == 0, f"processing the notebooks for the docs failed:\n{proc.stdout}{proc.stderr}"
    render = subprocess.run(
        [sys.executable, "-m", "smalldocs.cli", "render", "_proc"], cwd=work, capture_output=True, text=True
    )
    assert render.returncode == 0, render.stdout + render.stderr
    warnings = [w for w in render.stderr.splitlines() if w.startswith("warning:")]
    unexpected = [w for w in warnings if not any(k in w for k in KNOWN_WARNINGS)]
    assert not unexpected, f"the docs build warned: {unexpected}"
    out = work / "_proc" / "_docs"
    keep = ARTIFACTS / "site"  # a copy a person can open
    shutil.rmtree(keep, ignore_errors=True)
    shutil.copytree(out, keep)
    return out


class _Refs(HTMLParser):
    "Collect the links, images and ids of one HTML page."

    def __init__(self):
        super().__init__()
        self.links, self.images, self.ids = [], [], set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])
        elif tag == "img" and a.get("src") is not None:
            self.images.append(a["src"])
        elif tag in ("link", "script") and (a.get("href") or a.get("src")):
            self.links.append(a.get("href") or a.get("src"))


@functools.cache
def _parse(path: Path) -> _Refs:
    refs = _Refs()
    refs.feed(path.read_text(encoding="utf-8"))
    return refs


def _local_target(page: Path, ref: str, site: Path):
    "The file and fragment a relative reference points to, or None for outside and data URLs."
    url = urlparse(ref)
    if url.scheme or ref.startswith("//"):
        return None
    target = page if not url.path else (page.parent / unquote(url.path)).resolve()
    if target.is_dir():
        target = target / "index.html"
    return target, url.fragment


def _image_outputs(nb: Path) -> int:
    "How many images (plots) a notebook's saved outputs hold."
    cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
    return sum(
        1 for c in cells for o in c.get("outputs", []) if any(k.startswith("image/") for k in o.get("data", {}))
    )


def test_every_notebook_has_a_page(site):
    for nb in notebooks():
        assert (site / f"{nb.stem}.html").exists(), f"no page for {nb.name}"


def test_no_broken_links_or_images(site):
    "Every local link, script, stylesheet and image resolves to a file, and every #fragment to an id."
    broken = []
    pages = sorted(site.rglob("*.html"))
    for page in pages:
        refs = _parse(page)
        for ref in refs.links + refs.images:
            t = _local_target(page, ref, site)
            if t is None:
                continue
            target, frag = t
            if not target.exists():
                broken.append(f"{page.relative_to(site)}: {ref} (no file)")
            elif frag and target.suffix == ".html" and frag not in _parse(target).ids:
                broken.append(f"{page.relative_to(site)}: {ref} (no id {frag!r})")
        for src in refs.images:
            if not src:
                broken.append(f"{page.relative_to(site)}: an image without a source")
    assert pages and not broken, "\n".join(broken)


def test_every_plot_is_on_its_page(site):
    "Each image a notebook's outputs hold appears as an image on its page."
    for nb in notebooks():
        expected = _image_outputs(nb)
        shown = [s for s in _parse(site / f"{nb.stem}.html").images if s.startswith("data:image/") or s.endswith((".png", ".jpg", ".svg"))]
        assert len(shown) >= expected, f"{nb.name}: {expected} plots in the notebook, {len(shown)} images on its page"


# ---- the browser part -------------------------------------------------------------------------------------------

def katex_dist(url: str) -> Path:
    "A local copy of the KaTeX release that smalldocs links, fetched once with npm from the npm registry."
    version = re.search(r"katex@([\d.]+)", url).group(1)
    cache = ARTIFACTS / f"katex-{version}"
    dist = cache / "package" / "dist"
    if not (dist / "katex.min.js").exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip(f"npm not found: it fetches KaTeX {version} from the npm registry for the offline maths check")
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([npm, "pack", f"katex@{version}", "--pack-destination", str(cache)], check=True, capture_output=True)
        with tarfile.open(cache / f"katex-{version}.tgz") as tar:
            tar.extractall(cache, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    return dist


@pytest.fixture(scope="module")
def server(site):
    "Serve the site on 127.0.0.1."
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_pages_in_chromium(site, server):
    "Every page loads in headless Chromium: images decoded, maths typeset by KaTeX, no console errors."
    exe = chromium_path()
    if exe is None:
        pytest.skip("Chromium not found (install Debian's chromium, or set RNN_TUTORIAL_CHROMIUM)")
    pytest.importorskip("playwright.sync_api")
    from smalldocs.layout import KATEX

    dist = katex_dist(KATEX)
    shots = ARTIFACTS / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    problems, blocked = [], []

    def route(r):
        url = r.request.url
        if url.startswith(server):
            return r.continue_()
        if url.startswith(KATEX + "/"):
            local = dist / url[len(KATEX) + 1:].split("?")[0]
            if local.is_file():
                return r.fulfill(path=str(local))
        blocked.append(url)
        return r.abort()

    with chromium(exe) as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.route("**/*", route)
        errors = []
        page.on("console", lambda m: errors.append(m) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(e))
        for html in sorted(site.rglob("*.html")):
            rel = html.relative_to(site).as_posix()
            errors.clear()
            n_blocked = len(blocked)
            page.goto(urljoin(server, rel), wait_until="networkidle")
            bad_images = page.eval_on_selector_all(
                "img", "els => els.filter(e => !(e.complete && e.naturalWidth > 0)).map(e => e.src.slice(0, 80))")
            if bad_images:
                problems.append(f"{rel}: images that did not load: {bad_images}")
            if "katex.min.js" in html.read_text(encoding="utf-8"):
                page.wait_for_function("() => window.katex !== undefined", timeout=10_000)
                n_math = page.locator(".katex").count()
                n_err = page.locator(".katex-error").count()
                if n_math == 0 or n_err:
                    problems.append(f"{rel}: maths not rendered ({n_math} KaTeX nodes, {n_err} KaTeX errors)")
                leftover = page.evaluate(
                    r"""() => { const w = document.createTreeWalker(document.querySelector('main') || document.body, NodeFilter.SHOW_TEXT);
                    let n, bad = []; while ((n = w.nextNode())) { if (n.parentElement.closest('pre, code, script, .katex')) continue;
                    if (/\\\(|\\\[|\$\$/.test(n.textContent)) bad.push(n.textContent.slice(0, 60)); } return bad; }""")
                if leftover:
                    problems.append(f"{rel}: TeX left untypeset: {leftover[:3]}")
            outside = set(blocked[n_blocked:])
            for e in errors:
                text = getattr(e, "text", None) or str(e)
                loc = getattr(e, "location", None) or {}
                if "net::ERR_FAILED" in text and (loc.get("url") in outside or not loc.get("url")):
                    continue  # an outside request we blocked on purpose (fonts, analytics)
                problems.append(f"{rel}: console error: {text[:200]}")
            page.screenshot(path=str(shots / f"docs-{rel.replace('/', '_')[:-5]}.png"), full_page=True)
    assert not problems, "\n".join(problems)
