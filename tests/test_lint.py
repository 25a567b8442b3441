"`ruff check` passes on the notebooks (the source), the tests and the tools, with the settings in pyproject.toml."
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def test_ruff_check_passes():
    ruff = Path(sys.executable).parent / "ruff"
    exe = str(ruff) if ruff.exists() else shutil.which("ruff")
    assert exe, "ruff is not installed: it is in the dev extra (pip install -e '.[dev]')"
    run = subprocess.run([exe, "check", "--output-format", "concise", "."], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, f"ruff check found problems:\n{run.stdout[-6000:]}{run.stderr[-2000:]}"
