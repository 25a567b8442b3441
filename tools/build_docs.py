"""Build the docs site offline, without Quarto, and say where to open it.

    .venv/bin/python tools/build_docs.py [--out _site]

The notebooks are processed as `nbdev_docs` processes them for Quarto (`refresh_quarto_yml`, `nbdev_sidebar`,
then `nbdev.serve.proc_nbs`), in a scratch copy of the project so the checkout is never touched, and `smalldocs`
(pure Python, reading the same `_quarto.yml`) renders the site. The site links KaTeX from a CDN; when npm can
fetch the `katex` package at the version smalldocs names (once, cached in `.artifacts/`), it is copied into the
site and the links are pointed at it, so maths shows in a site opened straight from disk. Figures in
`nbs/figures/` reach the site as the files pages link to (smalldocs copies them); any a page does not link
are copied as well, so the folder is always complete.
"""
import argparse
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / ".artifacts"

# Warnings smalldocs prints for Quarto settings it does not need; any other warning fails the build.
KNOWN_WARNINGS = (
    "format commonmark is not built",
    "format.html.keep-md is ignored",
    "output-file is not read by smalldocs",
)
KATEX_DIR = "site_libs/katex"  # where the local KaTeX goes, inside the site

_PREP = (
    "from nbdev.quarto import refresh_quarto_yml, nbdev_sidebar\n"
    "from nbdev.serve import proc_nbs\n"
    "refresh_quarto_yml()\n"
    "nbdev_sidebar.__wrapped__()\n"
    "print(proc_nbs(n_workers=0))\n"
)


class DocsBuildError(RuntimeError):
    "The notebooks could not be processed, or smalldocs failed or warned."


def copy_project(root: Path, work: Path) -> None:
    "Copy what the docs build reads (settings, Quarto config, notebooks, package) from `root` into `work`."
    for name in ("settings.ini", "_quarto.yml"):
        shutil.copy2(root / name, work / name)
    skip = shutil.ignore_patterns(".ipynb_checkpoints", "_proc", "__pycache__")
    shutil.copytree(root / "nbs", work / "nbs", symlinks=True, ignore=skip)
    if (root / "rnn_tutorial").is_dir():
        shutil.copytree(root / "rnn_tutorial", work / "rnn_tutorial", ignore=skip)


def merge_streams(nbs: Path) -> int:
    """Join consecutive outputs of one stream (stdout, stderr) in each notebook of `nbs`; return how many were joined.

    A kernel may deliver one `print`'s text in several pieces; the page should show them as one block, as Jupyter
    does. Only the scratch copy is changed, never the checkout.
    """
    joined = 0
    for path in sorted(nbs.glob("*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        for cell in nb["cells"]:
            merged = []
            for out in cell.get("outputs", []):
                last = merged[-1] if merged else None
                if (out.get("output_type") == "stream" and last is not None and last.get("output_type") == "stream"
                        and last.get("name") == out.get("name")):
                    text = lambda o: o["text"] if isinstance(o["text"], str) else "".join(o["text"])
                    last["text"] = text(last) + text(out)
                    joined += 1
                else:
                    merged.append(out)
            if "outputs" in cell:
                cell["outputs"] = merged
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False), encoding="utf-8")
    return joined


def render(work: Path) -> Path:
    "Process the notebooks of the project copy in `work` and render it with smalldocs; return the site's folder."
    proc = subprocess.run([sys.executable, "-c", _PREP], cwd=work, capture_output=True, text=True)
    if proc.returncode != 0:
        raise DocsBuildError(f"processing the notebooks for the docs failed:\n{proc.stdout}{proc.stderr}")
    cmd = [sys.executable, "-m", "smalldocs.cli", "render", "_proc"]
    out = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    if out.returncode != 0:
        raise DocsBuildError(f"smalldocs failed:\n{out.stdout}{out.stderr}")
    warnings = [w for w in out.stderr.splitlines() if w.startswith("warning:")]
    unexpected = [w for w in warnings if not any(k in w for k in KNOWN_WARNINGS)]
    if unexpected:
        raise DocsBuildError("the docs build warned:\n" + "\n".join(unexpected))
    return work / "_proc" / "_docs"


def copy_figures(nbs: Path, site: Path) -> list[Path]:
    "Copy every file of `nbs/figures/` into `site/figures/` (those pages link are there already); return them."
    src = nbs / "figures"
    if not src.is_dir():
        return []
    copied = []
    for f in sorted(src.iterdir()):
        if f.is_file() and not f.name.startswith((".", "_")) and f.suffix in (".svg", ".png", ".jpg", ".gif"):
            dest = site / "figures" / f.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dest)
            copied.append(dest)
    return copied


def katex_url() -> str:
    "The KaTeX address smalldocs links (`.../katex@VERSION/dist`)."
    from smalldocs.layout import KATEX

    return KATEX


def katex_dist(url: str, cache_root: Path = ARTIFACTS) -> Path | None:
    "A local copy of the KaTeX release named in `url`, fetched once with `npm pack`; None if npm cannot get it."
    version = re.search(r"katex@([\d.]+)", url).group(1)
    cache = cache_root / f"katex-{version}"
    dist = cache / "package" / "dist"
    if (dist / "katex.min.js").exists():
        return dist
    npm = shutil.which("npm")
    if npm is None:
        return None
    cache.mkdir(parents=True, exist_ok=True)
    got = subprocess.run([npm, "pack", f"katex@{version}", "--pack-destination", str(cache)], capture_output=True)
    tgz = cache / f"katex-{version}.tgz"
    if got.returncode != 0 or not tgz.exists():
        return None
    with tarfile.open(tgz) as tar:
        tar.extractall(cache, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    return dist if (dist / "katex.min.js").exists() else None


def localise_katex(site: Path, url: str, dist: Path) -> int:
    "Copy KaTeX's `dist` into the site and point every page's KaTeX links at it; return how many pages changed."
    shutil.copytree(dist, site / KATEX_DIR, dirs_exist_ok=True)
    changed = 0
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        if url not in text:
            continue
        up = "../" * (len(page.relative_to(site).parts) - 1)
        page.write_text(text.replace(url, up + KATEX_DIR), encoding="utf-8")
        changed += 1
    return changed


def build(out: Path, root: Path = ROOT, work: Path | None = None, katex: bool = True, log=print) -> Path:
    """Build the site of the project at `root` into `out` (replaced if it exists) and return `out`.

    `work` is the scratch folder for the project copy (a temporary one, removed afterwards, if None). With
    `katex`, KaTeX is copied into the site when npm can fetch it; otherwise pages keep the CDN links.
    """
    out = Path(out).resolve()
    with tempfile.TemporaryDirectory(prefix="rnn-tutorial-docs-") as tmp:
        work = Path(work) if work is not None else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        log(f"copying the project into {work}")
        copy_project(Path(root), work)
        merge_streams(work / "nbs")
        log("processing the notebooks (nbdev proc_nbs) and rendering the site (smalldocs); this takes a minute")
        site = render(work)
        copy_figures(work / "nbs", site)
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(site, out)
    if katex:
        url = katex_url()
        dist = katex_dist(url)
        if dist is None:
            log(f"KaTeX could not be fetched with npm: pages load it from {url} (maths needs the internet)")
        else:
            n = localise_katex(out, url, dist)
            log(f"KaTeX copied into the site from the npm package ({n} pages point at {KATEX_DIR})")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Build the docs site offline (no Quarto needed).")
    p.add_argument("--out", default=str(ROOT / "_site"), help="folder to write the site to (default: _site)")
    p.add_argument("--no-katex", action="store_true", help="keep the KaTeX CDN links instead of a local copy")
    args = p.parse_args(argv)
    try:
        site = build(Path(args.out), katex=not args.no_katex)
    except DocsBuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"\nThe site is built. Open it in a browser:\n  {(site / 'index.html').as_uri()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
