"""The documentation's Python examples run, and the README's commands are what CI runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from alignment_fixtures import tiny_overrides, write_cov_ctr
from conftest import REPO
from generation_fixtures import tiny_generator_args

from m3fm.cli import main

PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
DOC_FILES = [*sorted((REPO / "docs").rglob("*.md")), REPO / "README.md"]
EXAMPLES = [
    pytest.param(code, id=f"{path.relative_to(REPO)}:{number}")
    for path in DOC_FILES
    for number, code in enumerate(PYTHON_BLOCK.findall(path.read_text()), start=1)
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A folder holding what the examples name: scan.png, tiny models in runs/align/final
    (alignment) and runs/zh-zeroshot/final (report model)."""
    root = tmp_path_factory.mktemp("docs")
    data = write_cov_ctr(root / "data")
    align = root / "runs" / "align"
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--recipe", "cov-ctr-align", "--data", str(data), "--out", str(align),
              *tiny_overrides("train.max_steps=2")])
    assert exit_info.value.code == 0
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--recipe", "cov-ctr-zh-zeroshot", "--data", str(data), "--out",
              str(root / "runs" / "zh-zeroshot"),
              *tiny_generator_args(f"align.checkpoint={align / 'final'}", "train.max_steps=2")])
    assert exit_info.value.code == 0
    shutil.copy(data / "images" / "val-0.png", root / "scan.png")
    return root


@pytest.mark.parametrize("code", EXAMPLES)
def test_python_example_runs(code: str, monkeypatch, workspace):
    real_data = REPO.parent / "shared" / "data"
    if "M3FM_DATA" not in os.environ and real_data.is_dir():
        monkeypatch.setenv("M3FM_DATA", str(real_data))
    monkeypatch.chdir(workspace)
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
    assert install_and_run.group(2).startswith("m3fm run --plugin ct --lang zh ")
    assert re.search(r"[\u4e00-\u9fff]{8}", result.stdout), result.stdout  # a Chinese report


def test_examples_were_found():
    assert len(EXAMPLES) >= 3
