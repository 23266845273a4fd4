"""The documentation's Python examples run, and the README's commands are what CI runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
DOC_FILES = [*sorted((REPO / "docs").rglob("*.md")), REPO / "README.md"]
EXAMPLES = [
    pytest.param(code, id=f"{path.relative_to(REPO)}:{number}")
    for path in DOC_FILES
    for number, code in enumerate(PYTHON_BLOCK.findall(path.read_text()), start=1)
]


@pytest.mark.parametrize("code", EXAMPLES)
def test_python_example_runs(code: str, monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    exec(compile(code, "<docs example>", "exec"), {"__name__": "docs_example"})


def test_readme_test_command_is_what_ci_runs():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    install, test = re.search(r"```bash\n(pip install -e \S+) && (pytest)\n```", readme).groups()
    assert re.search(rf"^pip install --quiet {re.escape(install[len('pip install '):])}$", ci,
                     re.MULTILINE)
    assert re.search(rf"^{test}$", ci, re.MULTILINE)


def test_readme_main_command_runs():
    """The README's first command, minus its `pip install .` (this environment has m3fm)."""
    readme = (REPO / "README.md").read_text()
    install_and_run = re.search(r"```bash\n(pip install \. && (m3fm .+))\n```", readme)
    assert install_and_run, "the README must open with `pip install . && m3fm ...`"
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-c", install_and_run.group(2)], capture_output=True,
                            text=True, env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr


def test_examples_were_found():
    assert len(EXAMPLES) >= 3
