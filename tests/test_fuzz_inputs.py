"""Fuzzing the readers: corrupt and mutated PNG, JPEG, TIFF, DICOM and NIfTI files.

Hypothesis starts from small valid files made here, flips, cuts and inserts bytes and varies
header fields (declared dimensions, bit depths, data types, voxel sizes), and feeds each file to
:func:`m3fm.imaging.preprocess` for ``ct`` and ``cxr``.  Each case must end, within its time
limit and memory bound, in a tensor or an InputError: no other exception, no hang, no library
warning on the loose.  The generated cases are counted and the count is printed at the end.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import signal
import struct
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydicom import config as dicom_config
from pydicom.data import get_testdata_file

from m3fm.imaging import preprocess
from m3fm.registry import InputError, get_registry

BUDGET_MB = 64
"""M3FM_MAX_INPUT_MB while fuzzing, so that the memory bound below means something."""
PEAK_GROWTH_LIMIT_MB = 4 * BUDGET_MB + 256
"""Most a case may add to the process's peak memory: reading takes about twice the budget,
and the ct volume's resampling grid is bounded on its own."""
TIME_LIMIT_S = 20
EXAMPLES = 300
"""Cases per format; the module runs in about a minute on 2 CPU cores."""
SETTINGS = settings(
    max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                           HealthCheck.data_too_large],
)
CASES: Counter[str] = Counter()
OUTCOMES: Counter[str] = Counter()
PEAKS: list[float] = []


# --- small valid files to start from ----------------------------------------------------------


def _picture(mode: str = "L", size: tuple[int, int] = (40, 30)) -> Image.Image:
    rng = np.random.default_rng(0)
    pixels = np.add.outer(np.arange(size[1]), np.arange(size[0])) * 3
    pixels = (pixels + rng.integers(0, 40, pixels.shape)).clip(0, 255).astype(np.uint8)
    return Image.fromarray(pixels).convert(mode)


def _saved(picture: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format, **options)
    return buffer.getvalue()


def _dicom(modality: str) -> pydicom.Dataset:
    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    dataset.Modality = modality
    return dataset


def _dicom_bytes(dataset: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    with _lenient_dicom_writing():
        dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@contextmanager
def _lenient_dicom_writing() -> Iterator[None]:
    """Let pydicom write the invalid values a fuzzer asks for."""
    mode = dicom_config.settings.writing_validation_mode
    dicom_config.settings.writing_validation_mode = dicom_config.IGNORE
    try:
        yield
    finally:
        dicom_config.settings.writing_validation_mode = mode


def _nifti_header() -> nib.Nifti1Header:
    header = nib.Nifti1Header()
    header.set_data_shape((12, 10, 6))
    header.set_data_dtype(np.int16)
    header.set_zooms((0.8, 0.8, 2.5))
    header.set_slope_inter(1.0, -1024.0)
    header.set_qform(np.diag([0.8, 0.8, 2.5, 1.0]), code=1)
    header["vox_offset"] = 352
    return header


def _nifti_bytes(header: nib.Nifti1Header) -> bytes:
    voxels = np.random.default_rng(0).integers(0, 2000, (12, 10, 6), dtype=np.int16)
    return header.binaryblock + b"\0" * 4 + voxels.tobytes(order="F")


SEEDS: dict[str, tuple[str, bytes]] = {
    "png": (".png", _saved(_picture(), "PNG")),
    "png-rgba": (".png", _saved(_picture("RGBA"), "PNG")),
    "png-16": (".png", _saved(Image.fromarray(
        np.asarray(_picture()).astype(np.uint16) * 250), "PNG")),
    "jpeg": (".jpg", _saved(_picture("RGB"), "JPEG", quality=90)),
    "tiff": (".tif", _saved(Image.fromarray(np.asarray(_picture(), np.float32)), "TIFF")),
    "dicom-ct": (".dcm", _dicom_bytes(_dicom("CT"))),
    "dicom-dx": (".dcm", _dicom_bytes(_dicom("DX"))),
    "nifti": (".nii", _nifti_bytes(_nifti_header())),
}


# --- mutations --------------------------------------------------------------------------------

positions = st.floats(min_value=0, max_value=1, allow_nan=False)
mutation = st.one_of(
    st.tuples(st.just("flip"), positions, st.integers(1, 255)),
    st.tuples(st.just("cut"), positions),
    st.tuples(st.just("insert"), positions, st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("repeat"), positions, st.integers(1, 512)),
)


def _mutate(data: bytes, mutations: list[tuple]) -> bytes:
    """Apply flips, truncations, insertions and repeated spans at relative positions."""
    data = bytearray(data)
    for kind, where, *arguments in mutations:
        at = min(int(where * len(data)), max(len(data) - 1, 0))
        if kind == "flip" and data:
            data[at] ^= arguments[0]
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = arguments[0]
        elif kind == "repeat":
            data[at:at] = data[at : at + arguments[0]] * 3
    return bytes(data)


dimension = st.one_of(st.integers(0, 70), st.sampled_from([255, 4096, 65535, 2**31 - 1]))


@st.composite
def png_header(draw) -> bytes:
    """A valid PNG whose IHDR (size, bit depth, colour type, interlace) is redrawn."""
    data = bytearray(SEEDS[draw(st.sampled_from(["png", "png-rgba", "png-16"]))][1])
    data[16:29] = struct.pack(
        ">IIBBBBB", draw(dimension), draw(dimension),
        draw(st.sampled_from([1, 2, 4, 8, 16, 3, 32])), draw(st.sampled_from([0, 2, 3, 4, 6, 5])),
        0, 0, draw(st.sampled_from([0, 1, 2])))
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@st.composite
def jpeg_header(draw) -> bytes:
    """A valid JPEG whose start-of-frame size and component count are redrawn."""
    data = bytearray(SEEDS["jpeg"][1])
    frame = data.index(b"\xff\xc0")
    data[frame + 5 : frame + 9] = struct.pack(">HH", draw(dimension) % 65536,
                                              draw(dimension) % 65536)
    data[frame + 9] = draw(st.sampled_from([1, 3, 4, 0, 2]))
    return bytes(data)


@st.composite
def dicom_header(draw) -> bytes:
    """CT_small (as CT or DX) with its pixel-layout and geometry tags redrawn."""
    dataset = _dicom(draw(st.sampled_from(["CT", "DX", "MR", ""])))
    fields = {
        "Rows": draw(dimension) % 65536, "Columns": draw(dimension) % 65536,
        "NumberOfFrames": draw(st.sampled_from(["1", "2", "0", "-3", "x", "40000"])),
        "BitsAllocated": draw(st.sampled_from([16, 8, 1, 32, 64, 12])),
        "BitsStored": draw(st.sampled_from([16, 12, 8, 40])),
        "SamplesPerPixel": draw(st.sampled_from([1, 3, 4, 0])),
        "PhotometricInterpretation": draw(st.sampled_from(
            ["MONOCHROME2", "MONOCHROME1", "RGB", "PALETTE COLOR", "YBR_FULL", "bogus"])),
        "PixelRepresentation": draw(st.sampled_from([0, 1, 2])),
        "RescaleSlope": draw(st.sampled_from(["1", "0", "1e30", "-2.5", "nan"])),
        "PixelSpacing": draw(st.sampled_from([[0.66, 0.66], [0, 0], [1e6, 1e-6], [-1, 1]])),
    }
    numbers = {}  # values pydicom would not hold, patched into the written bytes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid values asked for
        for keyword in sorted(draw(st.sets(st.sampled_from(sorted(fields)), min_size=1,
                                           max_size=4))):
            value = fields[keyword]
            if keyword in ("NumberOfFrames", "RescaleSlope"):
                marker = "987654" if keyword == "NumberOfFrames" else "9.876543"  # valid, unique
                setattr(dataset, keyword, marker)
                numbers[marker.encode()] = value.encode().ljust(len(marker))
            else:
                setattr(dataset, keyword, value)
        data = _dicom_bytes(dataset)
    for marker, value in numbers.items():
        data = data.replace(marker, value)
    return data


@st.composite
def nifti_header(draw) -> bytes:
    """The small NIfTI volume with its dimensions, voxel sizes, data type and scaling redrawn."""
    header = _nifti_header()
    block = np.frombuffer(bytearray(header.binaryblock), dtype=header.structarr.dtype).copy()
    choices = {
        "dim": lambda: [draw(st.integers(-1, 8))] + [draw(dimension) % 32768 for _ in range(7)],
        "pixdim": lambda: [draw(st.sampled_from([1.0, -1.0, 0.0]))] + [draw(st.sampled_from(
            [0.0, -1.0, 1e-9, 0.8, 300.0, 1e9, float("nan"), float("inf")])) for _ in range(7)],
        "datatype": lambda: draw(st.sampled_from([2, 4, 8, 16, 64, 128, 32, 1792, 0, 7])),
        "bitpix": lambda: draw(st.sampled_from([8, 16, 32, 64, 0])),
        "vox_offset": lambda: draw(st.sampled_from([352.0, 0.0, 1e9, -8.0, 353.0])),
        "scl_slope": lambda: draw(st.sampled_from([0.0, float("nan"), 1e38, -1.0])),
        "qform_code": lambda: draw(st.sampled_from([0, 1, 2, 99])),
        "sform_code": lambda: draw(st.sampled_from([0, 1, 4, 99])),
    }
    for field in sorted(draw(st.sets(st.sampled_from(sorted(choices)), min_size=1, max_size=3))):
        block[field] = choices[field]()
    return block.tobytes() + _nifti_bytes(header)[348:]


def _gzipped(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)  # no time stamp: the same case each run


def _from_seed(names: list[str]) -> st.SearchStrategy[tuple[str, bytes]]:
    """A seed file (one of `names`) with 1 to 4 byte mutations."""
    return st.tuples(st.sampled_from(names), st.lists(mutation, min_size=1, max_size=4)).map(
        lambda case: (SEEDS[case[0]][0], _mutate(SEEDS[case[0]][1], case[1])))


def _with_suffix(suffix: str, strategy: st.SearchStrategy[bytes]) -> st.SearchStrategy:
    """Header variations, sometimes with byte mutations on top."""
    return st.tuples(strategy, st.lists(mutation, max_size=2)).map(
        lambda case: (suffix, _mutate(*case)))


FORMATS: dict[str, st.SearchStrategy[tuple[str, bytes]]] = {
    "png": st.one_of(_from_seed(["png", "png-rgba", "png-16"]),
                     _with_suffix(".png", png_header())),
    "jpeg": st.one_of(_from_seed(["jpeg"]), _with_suffix(".jpg", jpeg_header())),
    "tiff": _from_seed(["tiff"]),
    "dicom": st.one_of(_from_seed(["dicom-ct", "dicom-dx"]),
                       _with_suffix(".dcm", dicom_header())),
    "nifti": st.one_of(_from_seed(["nifti"]), _with_suffix(".nii", nifti_header()),
                       _with_suffix(".nii.gz", nifti_header().map(_gzipped))),
}


# --- running one case -------------------------------------------------------------------------


class _Hang(BaseException):
    """Raised by the alarm: a BaseException, so that no `except Exception` can hide it."""


@pytest.fixture(scope="module", autouse=True)
def _fuzzing_budget(request) -> Iterator[None]:
    """A small input budget for the module, and the case count printed when it ends."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("M3FM_MAX_INPUT_MB", str(BUDGET_MB))
        yield
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is not None and capture is not None and CASES:
        formats = ", ".join(f"{name} {n}" for name, n in sorted(CASES.items()))
        outcomes = ", ".join(f"{name} {n}" for name, n in sorted(OUTCOMES.items()))
        with capture.global_and_fixture_disabled():
            reporter.write_line(
                f"\nfuzz: {sum(CASES.values())} generated files ({formats}), each read as ct "
                f"and cxr: {outcomes}; largest peak growth {max(PEAKS, default=0):.0f} MB")


def _peak_mb() -> float:
    """This process's peak resident memory since the last reset (Linux), in MB."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM"))


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _check_case(suffix: str, data: bytes, folder: Path, fmt: str) -> None:
    """Read `data` as a file of `suffix` with ct and cxr: a tensor or an InputError, in time,
    in bounded memory, with every library warning turned into m3fm's."""
    path = folder / f"case{suffix}"
    path.write_bytes(data)
    CASES[fmt] += 1
    hang = []

    def alarm(signum, frame):
        hang.append(True)
        raise _Hang

    for name in ("ct", "cxr"):
        spec = get_registry().modality(name)
        measured = _reset_peak()  # Linux only; elsewhere memory is not checked
        before = _peak_mb() if measured else 0.0
        previous = signal.signal(signal.SIGALRM, alarm)
        signal.alarm(TIME_LIMIT_S)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    preprocess(spec, path)
                    OUTCOMES["tensor"] += 1
                except InputError:
                    OUTCOMES["InputError"] += 1
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
        assert not hang, f"{name} took over {TIME_LIMIT_S} s on {fmt} input {data[:64]!r}"
        loose = [str(w.message) for w in caught
                 if not issubclass(w.category, DeprecationWarning | PendingDeprecationWarning)]
        assert not loose, f"{name} let library warnings through: {loose}"
        if measured:
            PEAKS.append(_peak_mb() - before)
            assert PEAKS[-1] < PEAK_GROWTH_LIMIT_MB, f"{name} took {PEAKS[-1]:.0f} MB more"


def _fuzz_test(fmt: str) -> Callable:
    @SETTINGS
    @given(case=FORMATS[fmt])
    def test(case, tmp_path_factory):
        _check_case(*case, tmp_path_factory.getbasetemp(), fmt)

    test.__name__ = f"test_mutated_{fmt}_gives_a_tensor_or_an_input_error"
    return test


test_mutated_png_gives_a_tensor_or_an_input_error = _fuzz_test("png")
test_mutated_jpeg_gives_a_tensor_or_an_input_error = _fuzz_test("jpeg")
test_mutated_tiff_gives_a_tensor_or_an_input_error = _fuzz_test("tiff")
test_mutated_dicom_gives_a_tensor_or_an_input_error = _fuzz_test("dicom")
test_mutated_nifti_gives_a_tensor_or_an_input_error = _fuzz_test("nifti")


# --- the command line over a folder of corrupt files --------------------------------------------


@pytest.mark.slow
def test_cli_reports_every_corrupt_input_and_goes_on(capsys, tmp_path):
    """One `m3fm run` over 40 corrupt files: a result or an error line for each, no traceback."""
    rng = random.Random(0)
    folder = tmp_path / "corrupt"
    folder.mkdir()
    names = sorted(SEEDS)
    for index in range(40):
        name = names[index % len(names)]
        suffix, data = SEEDS[name]
        mutations = [("flip", rng.random(), rng.randrange(1, 256)) for _ in range(rng.randrange(4))]
        if index % 3 == 0:
            mutations.append(("cut", rng.uniform(0.2, 1)))
        (folder / f"{index:02d}-{name}{suffix}").write_bytes(_mutate(data, mutations))
    inputs = sorted(str(path) for path in folder.iterdir())

    code, out, err = run_cli(capsys, "run", "--plugin", "ct", "--no-report", "--json",
                             str(folder))

    assert code in (0, 1), err
    rows = [json.loads(line) for line in out.splitlines()]
    assert sorted(row["input"] for row in rows) == inputs
    for row in rows:
        assert "error" in row or "diagnosis" in row, row
    assert "Traceback" not in out + err
    assert all(line.startswith("m3fm: ") for line in err.splitlines() if line.strip()), err
