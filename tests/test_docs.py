"""The documentation's Python examples run, and the README's commands are what CI runs."""

from __future__ import annotations

import json
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
PAGES = [pytest.param(path, id=str(path.relative_to(REPO)))
         for path in DOC_FILES if PYTHON_BLOCK.search(path.read_text())]

RUN_PAGE = """
import json, sys
page, blocks = sys.argv[1], json.loads(open(sys.argv[2], encoding="utf-8").read())
for number, code in enumerate(blocks, start=1):
    print(f"::: {page} example {number}", file=sys.stderr, flush=True)
    exec(compile(code, f"<{page} example {number}>", "exec"), {"__name__": "docs_example"})
"""
"""Runs a page's examples in order, each with fresh globals, in the interpreter it starts in."""


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


@pytest.mark.parametrize("page", PAGES)
def test_python_examples_of_a_page_run_in_a_fresh_interpreter(page: Path, workspace):
    """As a reader runs them: a new Python that has imported nothing the page does not."""
    env = dict(os.environ)
    real_data = REPO.parent / "shared" / "data"
    if "M3FM_DATA" not in env and real_data.is_dir():
        env["M3FM_DATA"] = str(real_data)
    blocks = workspace / f"{page.stem}-examples.json"
    blocks.write_text(json.dumps(PYTHON_BLOCK.findall(page.read_text())), encoding="utf-8")
    name = str(page.relative_to(REPO))
    result = subprocess.run([sys.executable, "-c", RUN_PAGE, name, str(blocks)], cwd=workspace,
                            env=env, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-4000:]


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
    assert len(PAGES) >= 3 and any(page.values[0].name == "python.md" for page in PAGES)
