"""nbval really compares the saved outputs: a notebook whose saved output is wrong fails, and a cell tagged
`nbval-ignore-output` (the only nbval marker the chapters use) is run but not compared."""
import json
import subprocess
import sys

import pytest


def _notebook(path, saved: str, tags=()):
    "A one-cell notebook that prints 2, saved with `saved` as its output."
    cell = {"cell_type": "code", "execution_count": 1, "id": "c1", "metadata": {"tags": list(tags)},
            "source": "print(1 + 1)", "outputs": [{"output_type": "stream", "name": "stdout", "text": saved}]}
    kernel = {"name": "python3", "display_name": "python3", "language": "python"}
    nb = {"cells": [cell], "metadata": {"kernelspec": kernel}, "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb))
    return path


def _nbval(path) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval", "--nbval-current-env",
            "--rootdir", str(path.parent), str(path)]
    return subprocess.run(args, cwd=path.parent, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("saved, tags, passes", [("2\n", (), True), ("3\n", (), False),
                                                 ("3\n", ("nbval-ignore-output",), True)])
def test_nbval_compares_saved_outputs(tmp_path, saved, tags, passes):
    run = _nbval(_notebook(tmp_path / "probe.ipynb", saved, tags))
    assert (run.returncode == 0) == passes, run.stdout[-3000:] + run.stderr[-2000:]
    assert ("1 passed" if passes else "1 failed") in run.stdout  # the cell ran and was judged, nothing else failed
