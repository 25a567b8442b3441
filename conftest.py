"""Shared pytest set-up at the top level, so that it applies to the notebooks as well as to tests/.

The paths the tests use, the per-notebook time budget, and how nbval reads cleaned notebooks.
"""
import time
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
NBS = ROOT / "nbs"
ARTIFACTS = ROOT / ".artifacts"  # screenshots and rendered pages a person can look at (git-ignored)
NOTEBOOK_BUDGET_S = 180  # each notebook must run under nbval in under 3 minutes on 2 CPU cores

_notebook_seconds: dict[str, float] = defaultdict(float)
_session_start = time.monotonic()


def pytest_runtest_logreport(report):
    "Add up the setup, call and teardown time of every nbval cell by notebook."
    path = report.nodeid.split("::", 1)[0]
    if path.endswith(".ipynb"):
        _notebook_seconds[path] += report.duration


def pytest_terminal_summary(terminalreporter):
    "Print each notebook's run time against its budget."
    if not _notebook_seconds:
        return
    tr = terminalreporter
    tr.section("notebook run times (budget %d s each)" % NOTEBOOK_BUDGET_S)
    for path, secs in sorted(_notebook_seconds.items()):
        flag = "  OVER BUDGET" if secs > NOTEBOOK_BUDGET_S else ""
        tr.write_line(f"{secs:7.1f} s  {path}{flag}")
    tr.write_line(f"whole session: {time.monotonic() - _session_start:.0f} s")


def pytest_sessionfinish(session, exitstatus):
    "Fail the run when a notebook went over its time budget."
    over = {p: s for p, s in _notebook_seconds.items() if s > NOTEBOOK_BUDGET_S}
    if over and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_collection_modifyitems(items):
    """Compare every notebook cell's outputs, not only those with an execution count.

    `nbdev_clean` blanks execution counts, and nbval reads a blank count as "never run" (it then refuses
    saved outputs and skips the comparison). Our notebooks are saved after a full run, so each code cell
    is treated as run: its saved outputs, or the absence of any, are what the rerun must reproduce.
    """
    for item in items:
        cell = getattr(item, "cell", None)
        in_notebook = item.nodeid.split("::", 1)[0].endswith(".ipynb")
        if in_notebook and cell is not None and cell.get("execution_count") is None:
            cell["execution_count"] = 1
