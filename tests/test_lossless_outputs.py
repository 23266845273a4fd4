"""No finished result is lost: mixed shapes, any file name, special files, output faults,
concurrent writers, errors on stdout, and a benchmark that fails late (issue 13, class 2)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from m3fm.benchmarks.suite import Benchmark, BenchmarkError
from m3fm.models import default_model_dir
from m3fm.outputs import ResultsFile, json_text

ODD_NAME = os.fsdecode(b"scan-\xff\xfe.png")  # not valid UTF-8: Python keeps it as surrogates


def picture(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((48, 48)) * 255).astype(np.uint8)).save(path, format="PNG")
    return path


def volume(path: Path, depth: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    data = (rng.random((40, 40, depth)) * 1400 - 1000).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([0.8, 0.8, 2.5, 1.0])), path)
    return path


@pytest.fixture
def mixed_inputs(tmp_path) -> list[Path]:
    """A 2D slice, two volumes of different depths, a FIFO and a name that is not UTF-8."""
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    return [picture(tmp_path / "slice.png"), volume(tmp_path / "thin.nii.gz", 12),
            volume(tmp_path / "deep.nii.gz", 40, seed=1), fifo,
            picture(tmp_path / ODD_NAME, seed=2)]


@pytest.fixture
def no_hang():
    """Fail instead of waiting forever (a FIFO opened for reading blocks until a writer)."""
    signal.signal(signal.SIGALRM, lambda *args: pytest.fail("the command hung"))
    signal.alarm(240)
    yield
    signal.alarm(0)


def read_lines(path: Path) -> list[dict]:
    raw = path.read_bytes()
    raw.decode("utf-8")  # strict: the file is valid UTF-8
    return [json.loads(line) for line in raw.splitlines()]


def test_run_batches_shapes_reports_special_files_and_keeps_odd_names(
        capsys, tmp_path, mixed_inputs, no_hang):
    out = tmp_path / "results.jsonl"
    code, stdout, stderr = run_cli(capsys, "run", "--plugin", "ct", "--no-report", "--json",
                                   "--out", str(out), *map(str, mixed_inputs))
    written = read_lines(out)
    printed = [json.loads(line) for line in stdout.splitlines()]
    assert code == 0 and printed == written  # --json carries the error objects like --out
    by_input = {os.fsencode(result["input"]): result for result in written}
    assert set(by_input) == {os.fsencode(str(path)) for path in mixed_inputs}
    fifo = by_input[os.fsencode(str(mixed_inputs[3]))]
    assert set(fifo) == {"input", "error"} and "named pipe (FIFO)" in fifo["error"]
    for path in mixed_inputs[:3] + mixed_inputs[4:]:
        assert "covid19" in by_input[os.fsencode(str(path))]["diagnosis"]
    assert "named pipe" in stderr


def test_embed_batches_shapes_and_writes_odd_names(capsys, tmp_path, mixed_inputs, no_hang):
    code, stdout, _ = run_cli(capsys, "embed", "--checkpoint", str(default_model_dir()),
                              "--plugin", "ct", *map(str, mixed_inputs))
    printed = [json.loads(line) for line in stdout.splitlines()]
    assert code == 1  # the FIFO failed, and the others are all there
    assert [set(result) for result in printed].count({"input", "error"}) == 1
    vectors = [result["embedding"] for result in printed if "embedding" in result]
    assert len(vectors) == 4 and len({len(vector) for vector in vectors}) == 1
    assert os.fsencode(str(mixed_inputs[4])) in {os.fsencode(r["input"]) for r in printed}


@pytest.mark.parametrize("kind", ["fifo", "socket", "device"])
def test_every_kind_of_special_file_is_an_input_error_without_opening_it(tmp_path, kind,
                                                                         no_hang):
    import socket

    from m3fm.imaging import preprocess
    from m3fm.registry import InputError, get_registry

    path = tmp_path / "scan.png"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
    else:
        path.symlink_to("/dev/zero")  # opening it would read zeros forever
    with pytest.raises(InputError, match="not a file or folder"):
        preprocess(get_registry().modality("ct"), path)


def test_json_of_an_undecodable_name_is_valid_utf8_and_lossless():
    text = json_text({"input": ODD_NAME, "report": "右肺下叶"})
    text.encode("utf-8")  # strict: no lone surrogate left in the text
    assert "右肺下叶" in text and "\\udcff" in text
    assert os.fsencode(json.loads(text)["input"]) == b"scan-\xff\xfe.png"


@pytest.mark.parametrize("kind", ["folder", "missing-folder"])
def test_a_bad_out_path_is_refused_before_the_model_loads(capsys, tmp_path, monkeypatch, kind):
    import m3fm.cli.run

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(m3fm.cli.run, "load_model", no_model)
    out = tmp_path if kind == "folder" else tmp_path / "nowhere" / "r.jsonl"
    code, _, err = run_cli(capsys, "run", "--plugin", "ct", "--out", str(out),
                           str(picture(tmp_path / "a.png")))
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert ("is a folder" if kind == "folder" else "does not exist") in err


def test_a_full_disk_is_reported_with_what_was_written(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", "--plugin", "ct", "--no-report", "--out", "/dev/full",
                           str(picture(tmp_path / "a.png")))
    assert code == 1 and "the disk is full" in err and "first 0 results" in err
    assert "internal error" not in err


def test_a_second_writer_of_the_same_out_is_refused(capsys, tmp_path):
    out = tmp_path / "shared.jsonl"
    out.write_text('{"input": "kept"}\n')
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from pathlib import Path
            from m3fm.outputs import ResultsFile
            with ResultsFile(Path({str(out)!r})):
                print("holding", flush=True)
                time.sleep(120)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        code, _, err = run_cli(capsys, "run", "--plugin", "ct", "--out", str(out),
                               str(picture(tmp_path / "a.png")))
        assert code == 1 and "in use by another m3fm process" in err
        assert out.read_text() == '{"input": "kept"}\n'  # not truncated by the refused one
    finally:
        holder.kill()
        holder.wait()
    with ResultsFile(out) as sink:  # the lock died with its holder
        sink.write('{"input": "new"}')
    assert out.read_text() == '{"input": "new"}\n'


def test_a_failed_input_is_written_before_its_batch_is_decoded(tmp_path, monkeypatch):
    from m3fm.analysis import Analysis, analyse_inputs
    from m3fm.generation import load

    model = load(default_model_dir())
    embedded = []
    monkeypatch.setattr(model, "embed_images",
                        lambda images, modality: embedded.append(len(images)) or 1 / 0)
    results = analyse_inputs(model, [tmp_path / "missing.png", picture(tmp_path / "a.png")],
                             Analysis("ct", "en", report=False, labels=("covid19",)))
    assert "error" in next(results) and embedded == []


def test_decoding_options_that_would_give_garbage_are_refused_or_stable(capsys, tmp_path):
    image = str(picture(tmp_path / "a.png"))
    code, _, err = run_cli(capsys, "run", "--plugin", "ct", "--memory-temperature", "nan", image)
    assert code == 2 and "memory_temperature" in err
    code, out, _ = run_cli(capsys, "run", "--plugin", "ct", "--no-diagnosis", "--json",
                           "--memory-temperature", "1e-45", image)
    assert code == 0 and json.loads(out)["report"].strip()


def test_a_benchmark_failing_late_keeps_its_tables_and_names_the_step(tmp_path, monkeypatch):
    for name in ("cov-ctr", "covid-cxr", "iu-xray-reports"):
        (tmp_path / "data" / name).mkdir(parents=True)
    suite = Benchmark(tmp_path / "data", tmp_path / "runs", quick=True)
    monkeypatch.setattr(suite, "_report_generation", lambda: [{"system": "measured"}])

    def broken():
        raise RuntimeError("out of luck")

    monkeypatch.setattr(suite, "_retrieval", broken)
    published = []
    with pytest.raises(BenchmarkError, match="retrieval on cov-ctr with cov-ctr-align") as info:
        suite.measure(lambda results: published.append(json.loads(json.dumps(results))))
    assert "out of luck" in str(info.value)
    assert published[-1]["report"] == [{"system": "measured"}]
    assert "retrieval" in published[-1]["meta"]["failed"]
