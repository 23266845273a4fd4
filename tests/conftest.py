"""Shared fixtures and helpers: the real data location, a fresh plugin registry per test, and
running the CLI in-process."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from m3fm.cli import main
from m3fm.registry import reset_registry

REPO = Path(__file__).resolve().parents[1]

# The preprocessing cache of every test run goes to a fresh folder, never the user's own; a
# test that needs its own cache sets M3FM_CACHE itself.
os.environ["M3FM_CACHE"] = tempfile.mkdtemp(prefix="m3fm-test-cache-")
# Likewise the user cache folder, where `m3fm plugins list` keeps the conformance verdicts.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="m3fm-test-user-cache-")


def _data_root() -> Path:
    return Path(os.environ.get("M3FM_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def data_root() -> Path:
    """The real data sets (M3FM_DATA, else ../shared/data); skips the test when absent."""
    root = _data_root()
    if not root.is_dir():
        pytest.skip(f"real data not found at {root}; set M3FM_DATA to run this test")
    return root


@pytest.fixture(autouse=True)
def _fresh_registry():
    """Each test sees plugins as installed now, not as cached by an earlier test."""
    reset_registry()
    yield
    reset_registry()


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `m3fm ARGS` run in this process."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err
