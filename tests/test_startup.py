"""Start-up: what the CLI's quick verbs and a picture's path through `m3fm run` import, and the
cached conformance verdicts of `m3fm plugins list`.  Times are measured by
``python -m m3fm.benchmarks.startup``, never asserted here; what is asserted is the cause of
the speed (a module not imported, a kit not run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import REPO, run_cli
from PIL import Image

import m3fm.plugin_checks as plugin_checks
from m3fm.imaging import FitToSquare, read_image, read_picture, standardize
from m3fm.registry import get_registry


def _fresh_python(code: str) -> str:
    """Run `code` in a fresh interpreter; its stdout."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                            capture_output=True, text=True, env=os.environ.copy())
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_version_and_help_do_not_import_torch_or_the_plugin_machinery():
    """torch costs seconds; pluggy and pydantic (the registry's specs) a quarter second."""
    out = _fresh_python("""
        import sys
        from m3fm.cli import main
        for args in (["--help"], ["version", "--json"]):
            try:
                main(args)
            except SystemExit:
                pass
        print(sorted({name.split(".")[0] for name in sys.modules} & {"torch", "pluggy",
                                                                     "pydantic"}))
    """)
    assert out.strip().splitlines()[-1] == "[]"


def test_the_registrys_names_load_on_first_use():
    out = _fresh_python("""
        import sys
        import m3fm.registry
        before = "m3fm.registry.manager" in sys.modules
        from m3fm.registry import LanguageSpec, get_registry
        print(before, "m3fm.registry.manager" in sys.modules, LanguageSpec.__name__,
              get_registry().language("en").code)
    """)
    assert out.split() == ["False", "True", "LanguageSpec", "en"]


def test_a_run_without_clinical_outputs_imports_none_of_their_libraries():
    """highdicom, fhir.resources and captum are for --sr, --fhir and --heatmaps only."""
    sample = REPO / "plugins" / "samples" / "ct.png"
    out = _fresh_python(f"""
        import sys
        from m3fm.cli import main
        try:
            main(["run", "--plugin", "ct", "--no-report", {str(sample)!r}])
        except SystemExit as exit:
            assert exit.code in (0, None), exit.code
        print(sorted({{name.split(".")[0] for name in sys.modules}} &
                     {{"highdicom", "fhir", "captum"}}))
    """)
    assert out.strip().splitlines()[-1] == "[]"


def test_a_report_on_a_picture_imports_neither_transformers_nor_timm():
    """The bundled model runs on its plain-torch networks (m3fm.lean) and a picture is read
    with Pillow: transformers, timm (and the torchvision and torch._dynamo they pull in), the
    DICOM and NIfTI readers are seconds of imports this path does not need."""
    sample = REPO / "plugins" / "samples" / "ct.png"
    out = _fresh_python(f"""
        import sys
        from m3fm.cli import main
        try:
            main(["run", "--plugin", "ct", "--lang", "zh", {str(sample)!r}])
        except SystemExit as exit:
            assert exit.code in (0, None), exit.code
        print(sorted({{name.split(".")[0] for name in sys.modules}} &
                     {{"transformers", "timm", "torchvision", "monai", "pydicom", "nibabel"}}),
              "torch._dynamo" in sys.modules)
    """)
    assert out.strip().splitlines()[-1] == "[] False"


def test_a_picture_is_read_without_monai(tmp_path):
    """MONAI is imported for DICOM and volumes only; the run path of a PNG never needs it."""
    picture = tmp_path / "slice.png"
    Image.fromarray((np.arange(64 * 48).reshape(64, 48) % 251).astype(np.uint8)).save(picture)
    out = _fresh_python(f"""
        import sys
        import m3fm.analysis, m3fm.generation.reporting
        from m3fm.imaging import preprocess
        from m3fm.registry import get_registry
        for modality in ("ct", "cxr"):
            preprocess(get_registry().modality(modality), {str(picture)!r})
        print(sorted(name for name in sys.modules if name.split(".")[0] == "monai"))
    """)
    assert out.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("mode, bits", [("L", 8), ("RGB", 8), ("I;16", 16)])
def test_read_picture_gives_read_images_pixels_and_bit_depth(tmp_path, mode, bits):
    rng = np.random.default_rng(0)
    if mode == "I;16":
        picture = Image.fromarray((rng.random((30, 41)) * 60000).astype(np.uint16))
    else:
        picture = Image.fromarray((rng.random((30, 41, 3)) * 255).astype(np.uint8)).convert(mode)
    path = tmp_path / "picture.png"
    picture.save(path)
    grey, read_bits = read_picture(path)
    via_monai = read_image(path)
    assert type(grey) is torch.Tensor and grey.dtype == torch.float32
    assert torch.equal(grey, via_monai.as_tensor()) and read_bits == bits
    assert via_monai.meta["picture_bits"] == bits


def test_read_picture_refuses_what_is_not_a_picture(tmp_path):
    with pytest.raises(ValueError, match="read_image reads the others"):
        read_picture(tmp_path / "scan.nii.gz")


@pytest.mark.parametrize("shape", [(1, 50, 101), (1, 101, 50), (1, 3, 33, 20), (1, 64, 64)])
def test_fit_and_standardize_match_monais_transforms(shape):
    """The torch-only transforms compute what MONAI's SpatialPad and NormalizeIntensity did,
    so that models trained before keep seeing the same pixels."""
    from monai.transforms import NormalizeIntensity, SpatialPad

    image = torch.rand(shape)
    *leading, height, width = shape
    scale = 24 / max(height, width)
    resized = torch.nn.functional.interpolate(
        image.reshape(1, -1, height, width),
        size=(max(1, round(height * scale)), max(1, round(width * scale))),
        mode="bilinear", antialias=True, align_corners=False)[0]
    padded = SpatialPad((24, 24), mode="constant")(resized, value=float(resized.min()))
    expected = padded.as_tensor().reshape(*leading, 24, 24)
    assert torch.equal(FitToSquare(24)(image), expected)
    normalise = NormalizeIntensity(subtrahend=0.449, divisor=0.226)
    assert torch.equal(standardize()(expected), normalise(expected).as_tensor())


def _kit_runs(monkeypatch) -> list[int]:
    """A counter of conformance-kit runs by `plugins list`."""
    runs = []
    real = plugin_checks._run_kit

    def counted(registry):
        runs.append(1)
        return real(registry)

    monkeypatch.setattr(plugin_checks, "_run_kit", counted)
    return runs


def test_plugins_list_reuses_the_kits_verdicts_until_a_plugin_changes(capsys, monkeypatch,
                                                                       tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    runs = _kit_runs(monkeypatch)
    first = run_cli(capsys, "plugins", "list", "--json")
    second = run_cli(capsys, "plugins", "list", "--json")
    assert first == second and first[0] == 0 and len(runs) == 1
    assert run_cli(capsys, "plugins", "list", "--json", "--check") == first and len(runs) == 2
    # a plugin's file changes (an upgrade, an edit in a source checkout): the kit runs again
    sample = get_registry().modality("ct").sample_files[0]
    stat = sample.stat()
    try:
        os.utime(sample, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        assert run_cli(capsys, "plugins", "list", "--json") == first and len(runs) == 3
    finally:
        os.utime(sample, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_new_plugin_is_checked_not_taken_from_the_cache(capsys, monkeypatch, tmp_path):
    from m3fm.registry import hookimpl

    class Misfit:
        @hookimpl
        def m3fm_languages(self):
            english = get_registry().language("en")
            return [english.model_copy(update={"code": "xw", "normalize": lambda t: t + "!"})]

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    run_cli(capsys, "plugins", "list", "--json")
    get_registry().add_plugin(Misfit(), "misfit")
    code, out, _ = run_cli(capsys, "plugins", "list", "--json")
    [row] = [row for row in json.loads(out) if row["name"] == "xw"]
    assert code == 0 and row["status"].startswith("incompatible: normalize is idempotent")


def test_an_unwritable_cache_only_means_the_kit_runs_each_time(capsys, monkeypatch, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    runs = _kit_runs(monkeypatch)
    assert run_cli(capsys, "plugins", "list")[0] == 0
    assert run_cli(capsys, "plugins", "list")[0] == 0 and len(runs) == 2


def test_check_and_no_check_exclude_each_other(capsys):
    code, _, err = run_cli(capsys, "plugins", "list", "--check", "--no-check")
    assert code == 2 and "exclude each other" in err


def test_measure_reports_wall_time_and_peak_memory_of_a_fresh_process():
    from m3fm.benchmarks.startup import measure

    figures = measure([sys.executable, "-c", "bytearray(50_000_000)"], 1, os.environ.copy())
    assert figures["wall_s"] > 0 and figures["peak_rss_mb"] > 45


@pytest.mark.slow
def test_the_startup_benchmark_prints_every_figure_and_the_breakdown():
    result = subprocess.run([sys.executable, "-m", "m3fm.benchmarks.startup", "--repeats", "1",
                             "--json"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert {"m3fm --help", "m3fm version", "m3fm plugins list", "m3fm run (PNG)"} <= set(
        figures["figures"])
    assert figures["figures"]["m3fm plugins list"]["speed-up"] > 0
    assert list(figures["run_breakdown_s"]) == ["imports", "model load", "preprocess",
                                                "encode", "decode"]
