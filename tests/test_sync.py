"The package is what `nbdev_export` makes of the notebooks, and the notebooks are clean."
import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

BIN = Path(sys.executable).parent


def _copy_project(dest: Path) -> Path:
    "Copy what nbdev reads and writes (settings, notebooks, package) into `dest`."
    shutil.copy2(ROOT / "settings.ini", dest / "settings.ini")
    shutil.copy2(ROOT / "_quarto.yml", dest / "_quarto.yml")
    shutil.copytree(ROOT / "nbs", dest / "nbs", symlinks=True, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    shutil.copytree(ROOT / "rnn_tutorial", dest / "rnn_tutorial", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def _differences(a: Path, b: Path, pattern: str) -> list[str]:
    "Files matching `pattern` that differ between folders `a` and `b`, or exist in only one."
    names = {p.relative_to(a) for p in a.rglob(pattern)} | {p.relative_to(b) for p in b.rglob(pattern)}
    same = lambda n: (a / n).exists() and (b / n).exists() and filecmp.cmp(a / n, b / n, shallow=False)
    return sorted(str(n) for n in names if not same(n))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return _copy_project(tmp_path_factory.mktemp("project"))


def test_package_matches_notebooks(project):
    "`nbdev_export` changes nothing under rnn_tutorial/: nobody edited the generated code by hand."
    subprocess.run([BIN / "nbdev_export"], cwd=project, check=True, capture_output=True)
    changed = _differences(ROOT / "rnn_tutorial", project / "rnn_tutorial", "*.py")
    assert not changed, (f"rnn_tutorial/ differs from what nbdev_export makes of nbs/: {changed}. "
                         "Edit the notebook, then run nbdev_export.")


def test_notebooks_are_clean(project):
    "`nbdev_clean` changes nothing under nbs/."
    subprocess.run([BIN / "nbdev_clean"], cwd=project, check=True, capture_output=True)
    changed = _differences(ROOT / "nbs", project / "nbs", "*.ipynb")
    assert not changed, f"notebooks not clean: {changed}. Run nbdev_clean and commit."


def test_version_is_importable():
    "The package imports and reports the version in settings.ini."
    import configparser

    import rnn_tutorial

    cfg = configparser.ConfigParser(delimiters=["="])
    cfg.read(ROOT / "settings.ini")
    assert rnn_tutorial.__version__ == cfg["DEFAULT"]["version"]
