"The README's two commands are the ones CI runs and the docs home page shows, and the metadata is in one place."
import configparser
import json
import re
import subprocess

from conftest import NBS, ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def command(marker: str) -> str:
    "The one-line command in the code block right after `<!-- marker -->` in the README."
    m = re.search(rf"<!-- {marker} -->\n```bash\n(.+)\n```", README)
    assert m, f"README.md has no code block after <!-- {marker} -->"
    return m.group(1)


def test_ci_runs_the_readme_test_command():
    "`.ci/run` extracts exactly the README's test command (the awk line it uses, run here)."
    awk = re.search(r"cmd=\$\((awk .+ README\.md)\)", (ROOT / ".ci" / "run").read_text()).group(1)
    out = subprocess.run(["bash", "-c", awk], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    assert out == command("test-command")


def test_home_page_shows_both_commands():
    "nbdev regenerates README.md from index.ipynb, so the home page carries the same two commands."
    cells = json.loads((NBS / "index.ipynb").read_text(encoding="utf-8"))["cells"]
    text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    for marker in ("main-command", "test-command"):
        assert command(marker) in text, f"nbs/index.ipynb does not show the README's {marker}"


def test_requirements_pin_nbdev_2():
    "nbdev 3 refuses settings.ini, and nbdev 2 needs execnb < 0.2."
    cfg = configparser.ConfigParser(delimiters=["="])
    cfg.read(ROOT / "settings.ini")
    reqs = cfg["DEFAULT"]["requirements"].split()
    assert "nbdev>=2.4.14,<3" in reqs and any(r.startswith("execnb") and "<0.2" in r for r in reqs)
    assert not (ROOT / "pyproject.toml").read_text().count("[project]"), "metadata belongs in settings.ini only"
