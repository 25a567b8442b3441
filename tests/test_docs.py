"""The docs site builds offline and every page works in a real browser.

Quarto cannot be installed on our machines, so the site is rendered by `tools/build_docs.py`, the
command readers use too (this file imports it rather than repeating it): the notebooks are processed as
`nbdev_docs` processes them for Quarto, `smalldocs` renders the site, the figures of `nbs/figures/` are
copied and KaTeX is served from a copy inside the site. Links and images are checked on the HTML; every
figure is checked as a file (well-formed SVG with a viewBox, nothing external); then headless Chromium
opens every page with every outside request blocked: images must decode and maths must be typeset.
A throwaway notebook with a markdown figure checks the whole way from a notebook to a page opened from
disk, as a reader without a server opens the built site.
"""
import functools
import http.server
import json
import re
import shutil
import sys
import threading
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import pytest

from _browser import chromium, chromium_path
from conftest import ARTIFACTS, NBS, ROOT

sys.path.insert(0, str(ROOT / "tools"))
import build_docs  # noqa: E402  (tools/ is not a package: the docs command is a script)

FIGURES = NBS / "figures"
# The figures the chapters use, by name: other files may come and go, these must stay.
CONTRACT_FIGURES = (
    "rnn_unrolled.svg", "io_patterns.svg", "stacked_bidirectional.svg", "bptt_graph.svg", "lstm_cell.svg",
    "gru_cell.svg", "seq2seq_attention.svg", "beam_search_tree.svg", "ctc_lattice.svg",
)
SVG_NS = "{http://www.w3.org/2000/svg}"
MIN_FIGURE_TEXT_PX = 11  # a diagram's smallest text, sub- and superscripts included, in a 1280 px wide window
XLINK_HREF = "{http://www.w3.org/1999/xlink}href"


def notebooks() -> list[Path]:
    "The notebooks that become pages."
    return sorted(p for p in NBS.glob("*.ipynb") if not p.name.startswith("_"))


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    "Build the docs offline with the docs command's own code and return the site's folder."
    tmp = tmp_path_factory.mktemp("docs")
    out = build_docs.build(tmp / "site", work=tmp / "work", log=lambda *a: None)
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
        images = _parse(site / f"{nb.stem}.html").images
        shown = [s for s in images if s.startswith("data:image/") or s.endswith((".png", ".jpg", ".svg"))]
        assert len(shown) >= expected, f"{nb.name}: {expected} plots in the notebook, {len(shown)} images on its page"


# ---- the browser part -------------------------------------------------------------------------------------------

def katex_dist(url: str) -> Path:
    "The local copy of the KaTeX release that smalldocs links (the docs command's, fetched once with npm)."
    dist = build_docs.katex_dist(url)
    if dist is None:
        pytest.skip(f"npm could not fetch KaTeX ({url}) for the offline maths check")
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


def svg_text_sizes(svg: Path) -> tuple:
    "A figure's viewBox width and its smallest font size (of any <text> or <tspan>), both in the figure's units"
    root = ET.parse(svg).getroot()
    width = float(root.get("viewBox").replace(",", " ").split()[2])
    sizes = [float(e.get("font-size")) for e in root.iter()
             if e.tag in (f"{SVG_NS}text", f"{SVG_NS}tspan") and e.get("font-size")]
    return width, min(sizes)


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
            shown = page.eval_on_selector_all(
                'main img[src$=".svg"]',
                "els => els.map(e => [e.getAttribute('src'), e.getBoundingClientRect().width])")
            for src, px in shown:
                width, smallest = svg_text_sizes((html.parent / unquote(src)).resolve())
                if smallest * px / width < MIN_FIGURE_TEXT_PX:
                    problems.append(f"{rel}: {src}'s smallest text shows at {smallest * px / width:.1f} px, "
                                    f"under {MIN_FIGURE_TEXT_PX} px in a 1280 px window")
            if "katex.min.js" in html.read_text(encoding="utf-8"):
                page.wait_for_function("() => window.katex !== undefined", timeout=10_000)
                n_math = page.locator(".katex").count()
                n_err = page.locator(".katex-error").count()
                if n_math == 0 or n_err:
                    problems.append(f"{rel}: maths not rendered ({n_math} KaTeX nodes, {n_err} KaTeX errors)")
                leftover = page.evaluate(
                    r"""() => {
                    const w = document.createTreeWalker(document.querySelector('main') || document.body,
                                                        NodeFilter.SHOW_TEXT);
                    let n, bad = [];
                    while ((n = w.nextNode())) {
                      if (n.parentElement.closest('pre, code, script, .katex')) continue;
                      if (/\\\(|\\\[|\$\$/.test(n.textContent)) bad.push(n.textContent.slice(0, 60));
                    }
                    return bad; }""")
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


# ---- figures ----------------------------------------------------------------------------------------------------

def figure_files() -> list[Path]:
    return sorted(FIGURES.glob("*.svg"))


def test_contract_figures_exist():
    "The figures the chapters name are all there."
    missing = [n for n in CONTRACT_FIGURES if not (FIGURES / n).is_file()]
    assert not missing, f"missing from nbs/figures/: {missing}"


@pytest.mark.parametrize("svg", figure_files(), ids=lambda p: p.name)
def test_figure_is_self_contained_svg(svg):
    "Each figure is well-formed SVG with a usable viewBox, real text in a sans-serif font, and nothing external."
    root = ET.parse(svg).getroot()  # raises on malformed XML
    assert root.tag == f"{SVG_NS}svg", f"{svg.name}: the root element is {root.tag}, not svg"
    box = root.get("viewBox", "").replace(",", " ").split()
    assert len(box) == 4, f"{svg.name}: no viewBox"
    width, height = float(box[2]), float(box[3])
    assert width > 0 and height > 0, f"{svg.name}: empty viewBox {box}"
    assert "sans-serif" in root.get("font-family", ""), f"{svg.name}: the root sets no sans-serif font-family"
    texts = [e for e in root.iter() if e.tag == f"{SVG_NS}text"]
    assert texts, f"{svg.name}: no <text> (labels must be text, not paths)"
    external = []
    for e in root.iter():
        for attr in ("href", XLINK_HREF, "src"):
            ref = e.get(attr)
            if ref is not None and not ref.startswith("#"):
                external.append(ref)
        for value in e.attrib.values():
            external += [u for u in re.findall(r"url\(([^)]*)\)", value) if not u.strip("'\" ").startswith("#")]
        if e.tag in (f"{SVG_NS}image", f"{SVG_NS}foreignObject", f"{SVG_NS}script"):
            external.append(e.tag)
        if e.tag == f"{SVG_NS}style" and re.search(r"@import|@font-face|url\(", e.text or ""):
            external.append("a stylesheet that loads something")
    assert not external, f"{svg.name}: refers to something outside the file: {external}"


def test_every_figure_reaches_the_site(site):
    "The build copies every figure into the site, linked from a page or not yet."
    missing = [p.name for p in figure_files() if not (site / "figures" / p.name).is_file()]
    assert not missing, f"figures not in the built site: {missing}"


def throwaway_project(root: Path) -> Path:
    "A minimal copy of the project whose only notebook shows a figure in markdown, with maths beside it."
    root.mkdir(parents=True)
    for name in ("settings.ini", "_quarto.yml"):
        shutil.copy2(ROOT / name, root / name)
    (root / "nbs").mkdir()
    shutil.copytree(FIGURES, root / "nbs" / "figures")
    shutil.copy2(NBS / "styles.css", root / "nbs" / "styles.css")
    (root / "nbs" / "_quarto.yml").symlink_to(Path("..") / "_quarto.yml")
    shutil.copytree(ROOT / "rnn_tutorial", root / "rnn_tutorial", ignore=shutil.ignore_patterns("__pycache__"))
    cells = [
        {"cell_type": "markdown", "metadata": {}, "source": "# Figures\n\n> A throwaway page."},
        {"cell_type": "markdown", "metadata": {},
         "source": "![The vanilla RNN, unrolled](figures/rnn_unrolled.svg)\n\nThe state: $h_t = \\tanh(a_t)$."},
    ]
    nb = {"cells": cells, "nbformat": 4, "nbformat_minor": 5,
          "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}}}
    (root / "nbs" / "index.ipynb").write_text(json.dumps(nb), encoding="utf-8")
    return root


def test_markdown_figure_reaches_a_page_opened_from_disk(tmp_path):
    "A notebook's `![caption](figures/x.svg)` becomes an image that loads, with maths typeset, from file://."
    exe = chromium_path()
    if exe is None:
        pytest.skip("Chromium not found (install Debian's chromium, or set RNN_TUTORIAL_CHROMIUM)")
    pytest.importorskip("playwright.sync_api")
    project = throwaway_project(tmp_path / "project")
    out = build_docs.build(tmp_path / "site", root=project, work=tmp_path / "work", log=lambda *a: None)
    html = (out / "index.html").read_text(encoding="utf-8")
    assert 'src="figures/rnn_unrolled.svg"' in html, "the markdown image is not on the page"
    local_katex = build_docs.KATEX_DIR + "/katex.min.js" in html
    requests = []
    with chromium(exe) as browser:
        page = browser.new_page()
        page.route("**/*", lambda r: r.continue_() if r.request.url.startswith("file:") else r.abort())
        page.on("request", lambda r: requests.append(r.url))
        page.goto((out / "index.html").as_uri(), wait_until="load")
        size = page.eval_on_selector('img[src="figures/rnn_unrolled.svg"]', "e => [e.complete, e.naturalWidth]")
        assert size[0] and size[1] > 0, f"the figure did not load from disk: {size}"
        if local_katex:
            page.wait_for_function("() => window.katex !== undefined", timeout=10_000)
            assert page.locator(".katex").count() > 0, "maths not typeset from the site's own KaTeX"
    assert not [u for u in requests if "katex" in u and not u.startswith("file:")], "KaTeX was fetched from outside"
