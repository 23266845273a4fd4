"""Plugins that try to end the process (``sys.exit()``, KeyboardInterrupt, SystemExit) at
import, in a hook or in a spec's callable: that plugin, or the input it was reading, fails; the
command goes on; a real Ctrl-C still interrupts it.

As in test_third_party_plugins.py, the plugins are a real distribution installed by pip into a
folder that the CLI subprocess gets on its PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import types
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_cli
from PIL import Image

from m3fm.plugins import en
from m3fm.plugins.ct import ct_spec
from m3fm.registry import EncoderOptions, PluginError, PluginRegistry, hookimpl, manager
from m3fm.registry.guard import UserInterrupt, call_plugin
from m3fm.registry.testing import first_failure

PACKAGE = {
    "pyproject.toml": """
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "m3fm-faulty"
        version = "0.1.0"

        [project.entry-points.m3fm]
        faulty-exit = "m3fm_faulty.exits"
        faulty-interrupt = "m3fm_faulty.interrupts"
        faulty-encoder = "m3fm_faulty.encoder"
        faulty-loader = "m3fm_faulty.loader"

        [tool.setuptools]
        packages = ["m3fm_faulty"]
    """,
    "m3fm_faulty/__init__.py": "",
    "m3fm_faulty/exits.py": "import sys\n\nsys.exit(0)\n",
    "m3fm_faulty/interrupts.py": """
        from m3fm.registry import hookimpl

        @hookimpl
        def m3fm_languages():
            raise KeyboardInterrupt
    """,
    "m3fm_faulty/modality.py": """
        import time
        from pathlib import Path

        import numpy as np
        import torch
        from PIL import Image

        from m3fm.registry import ModalitySpec


        class Encoder(torch.nn.Module):
            feature_dim = 8

            def forward(self, batch):
                return batch.flatten(1)[:, :8]


        def load(path: Path):
            if path.name.startswith("bad"):
                raise SystemExit(0)
            if path.name.startswith("slow"):  # a long read, to be interrupted by Ctrl-C
                path.with_suffix(".started").touch()
                time.sleep(60)
            pixels = np.asarray(Image.open(path).convert("L").resize((16, 16)), np.float32)
            return torch.from_numpy(pixels / 255)[None]


        def modality(name, build_encoder=lambda options: Encoder()):
            return ModalitySpec(
                name=name, description="Faulty scans", file_types=(".png",),
                slice_shape=(1, 16, 16), load=load, build_encoder=build_encoder,
                labels=("effusion",),
            )
    """,
    "m3fm_faulty/encoder.py": """
        from m3fm.registry import hookimpl
        from m3fm_faulty.modality import modality

        def build_encoder(options):
            raise SystemExit(3)

        @hookimpl
        def m3fm_modalities():
            return [modality("demo-enc", build_encoder)]
    """,
    "m3fm_faulty/loader.py": """
        from m3fm.registry import hookimpl
        from m3fm_faulty.modality import modality

        @hookimpl
        def m3fm_modalities():
            return [modality("demo-load")]
    """,
}
SOURCE = "m3fm-faulty 0.1.0"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """A folder holding the faulty package installed by pip (not on sys.path of this process)."""
    source = tmp_path_factory.mktemp("src")
    for name, text in PACKAGE.items():
        path = source / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    site = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(site), str(source)],
        check=True, capture_output=True,
    )
    return site


# The command gets Python's own SIGINT handler, as in a terminal, even when the tests run in
# the background (where SIGINT is ignored and the command would inherit that).
MAIN = ("import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from m3fm.cli import main; main()")


def command(*args: str) -> list[str]:
    return [sys.executable, "-c", MAIN, *args]


def environment(site: Path) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "COLUMNS": "250"}  # a table row per line


def m3fm(site: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args), capture_output=True, text=True,
                          env=environment(site), timeout=300)


def picture(path: Path) -> Path:
    pixels = np.arange(32 * 32, dtype=np.uint8).reshape(32, 32)
    Image.fromarray(pixels).save(path)
    return path


# The registry: import and hooks --------------------------------------------------------------


@pytest.fixture(scope="module")
def listing(plugin_site) -> dict[tuple[str, str], dict]:
    result = m3fm(plugin_site, "plugins", "list", "--json")
    assert result.returncode == 0, result.stderr
    return {(row["kind"], row["name"]): row for row in json.loads(result.stdout)}


def test_a_plugin_that_exits_on_import_is_listed_as_failed(listing):
    assert listing["plugin", "faulty-exit"]["status"] == (
        f"failed: plugin 'faulty-exit' ({SOURCE}) tried to stop the process in its import: "
        "SystemExit(0)")


def test_a_hook_that_raises_keyboard_interrupt_is_listed_as_failed(listing):
    assert listing["plugin", "faulty-interrupt"]["status"] == (
        f"failed: plugin 'faulty-interrupt' ({SOURCE}) tried to stop the process in "
        "m3fm_languages(): KeyboardInterrupt()")


def test_an_encoder_that_exits_fails_the_kit_and_the_others_still_work(listing):
    assert listing["modality", "demo-enc"]["status"] == (
        f"incompatible: encoder builds: plugin 'faulty-encoder' ({SOURCE}) tried to stop the "
        "process in modality 'demo-enc' build_encoder(): SystemExit(3)")
    for key in [("modality", "demo-load"), ("modality", "ct"), ("language", "en")]:
        assert listing[key]["status"] == "ok"


def test_the_table_is_printed_and_the_command_succeeds(plugin_site):
    result = m3fm(plugin_site, "plugins", "list", "--no-check")
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("│ ")]
    assert any("faulty-exit" in row and "failed: plugin 'faulty-exit'" in row for row in rows)
    assert any("demo-load" in row and "ok" in row for row in rows)


def _faulty_plugin(**hooks) -> types.ModuleType:
    module = types.ModuleType("faulty")
    for name, hook in hooks.items():
        setattr(module, name, hookimpl(hook))
    return module


def test_a_hook_calling_sys_exit_fails_that_plugin_only():
    registry = PluginRegistry()
    info = registry.add_plugin(_faulty_plugin(m3fm_languages=lambda: sys.exit(2)), "faulty",
                               package="m3fm-faulty", version="0.1.0")
    assert info.status == "failed"
    assert info.error == (f"plugin 'faulty' ({SOURCE}) tried to stop the process in "
                          "m3fm_languages(): SystemExit(2)")
    assert registry.add_plugin(en, "en").status == "ok"


# Spec callables ------------------------------------------------------------------------------


def test_build_encoder_that_exits_is_a_plugin_error():
    def build_encoder(options):
        raise SystemExit(3)

    spec = ct_spec().model_copy(update={"name": "demo-enc", "build_encoder": build_encoder})
    registry = PluginRegistry()
    registry.add_plugin(_faulty_plugin(m3fm_modalities=lambda: [spec]), "faulty",
                        package="m3fm-faulty", version="0.1.0")
    with pytest.raises(PluginError) as error:
        registry.modality("demo-enc").build_encoder(EncoderOptions())
    assert str(error.value) == (f"plugin 'faulty' ({SOURCE}) tried to stop the process in "
                                "modality 'demo-enc' build_encoder(): SystemExit(3)")
    assert isinstance(error.value.__cause__, SystemExit)


def test_the_kit_fails_a_load_that_exits_on_a_corrupt_file(tmp_path):
    def load(path):
        raise SystemExit(0)

    spec = ct_spec().model_copy(update={"name": "demo-exit", "load": load, "sample_files": ()})
    registry = PluginRegistry()
    registry.add_plugin(_faulty_plugin(m3fm_modalities=lambda: [spec]), "faulty",
                        package="m3fm-faulty", version="0.1.0")
    failure = first_failure("modality", registry.modality("demo-exit"), tmp_path)
    assert (failure.check, failure.problem) == (
        "corrupt file", f"plugin 'faulty' ({SOURCE}) tried to stop the process in modality "
        "'demo-exit' load(): SystemExit(0)")


def test_preprocess_reports_the_input_whose_load_exits_and_reads_the_other(plugin_site,
                                                                          tmp_path):
    good, bad = picture(tmp_path / "good.png"), picture(tmp_path / "bad.png")
    result = m3fm(plugin_site, "preprocess", "--plugin", "demo-load", "--json",
                  str(bad), str(good))
    assert result.returncode == 1, result.stderr
    rows = {Path(row["input"]).name: row for row in map(json.loads, result.stdout.splitlines())}
    assert rows["good.png"]["shape"] == [1, 16, 16]
    assert rows["bad.png"]["error"] == (
        f"{bad}: cannot read it as demo-load input: plugin 'faulty-loader' ({SOURCE}) tried "
        "to stop the process in modality 'demo-load' load(): SystemExit(0)")


FAULTY_CT = '''
from m3fm.plugins.ct import ct_spec
from m3fm.registry import hookimpl

SPEC = ct_spec()


def load(path):
    if path.name.startswith("bad"):
        raise SystemExit(0)
    return SPEC.load(path)


@hookimpl
def m3fm_modalities():
    return [SPEC.model_copy(update={"load": load})]
'''


def test_run_reports_the_input_whose_load_exits_and_analyses_the_other(
        tmp_path, monkeypatch, capsys):
    """`m3fm run` with the bundled model, its `ct` provided by a plugin whose load() exits."""
    (tmp_path / "faulty_ct.py").write_text(FAULTY_CT)
    monkeypatch.syspath_prepend(str(tmp_path))
    installed = manager.entry_points

    def entry_points(group):
        kept = [ep for ep in installed(group=group) if ep.name != "ct"]
        return [*kept, EntryPoint("faulty-ct", "faulty_ct", group)]

    monkeypatch.setattr(manager, "entry_points", entry_points)
    sample = REPO / "plugins" / "samples" / "ct.png"
    bad = tmp_path / "bad.png"
    bad.write_bytes(sample.read_bytes())
    code, out, err = run_cli(capsys, "run", "--plugin", "ct", "--lang", "en", "--no-report",
                             "--json", str(bad), str(sample))
    [analysed] = [row for row in map(json.loads, out.splitlines()) if "diagnosis" in row]
    assert analysed["input"] == str(sample) and 0 < analysed["diagnosis"]["covid19"] < 1
    assert err.strip() == (
        f"m3fm: error: {bad}: cannot read it as ct input: plugin 'faulty-ct' (faulty_ct) tried "
        "to stop the process in modality 'ct' load(): SystemExit(0)")
    assert code == 0  # `run` fails only when no input could be processed


# A real Ctrl-C -----------------------------------------------------------------------------


def test_a_real_ctrl_c_in_plugin_code_still_interrupts_the_command(plugin_site, tmp_path):
    slow = picture(tmp_path / "slow.png")
    process = subprocess.Popen(command("preprocess", "--plugin", "demo-load", str(slow)),
                               stderr=subprocess.PIPE, text=True, env=environment(plugin_site))
    deadline = time.monotonic() + 120
    while not slow.with_suffix(".started").exists() and process.poll() is None:
        assert time.monotonic() < deadline, "the plugin's load() never started"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "m3fm: error: interrupted"


def test_the_guard_tells_a_real_interrupt_from_a_plugins():
    def interrupted():
        raise UserInterrupt

    def converted():
        try:
            interrupted()
        except KeyboardInterrupt:
            sys.exit(0)  # a plugin turning the user's Ctrl-C into an exit

    for function in (interrupted, converted):
        with pytest.raises(UserInterrupt):
            call_plugin("plugin 'x' (x)", "f()", function)
    with pytest.raises(PluginError, match=r"in f\(\): GeneratorExit\(\)"):
        call_plugin("plugin 'x' (x)", "f()", _raise, GeneratorExit())


def _raise(error: BaseException) -> None:
    raise error
