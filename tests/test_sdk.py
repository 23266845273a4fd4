"""The plugin SDK: the modules third-party plugins build on, as their ``__all__`` lists define.

Checks that the SDK is complete and self-contained (every listed name exists and is documented;
the built-in plugins, the conformance kit, the scaffold and the example plugin import only SDK
names), that it takes paths as `str` or `Path`, and that `read_image` returns the axes the
SDK reference documents.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import inspect
import logging
import string
from pathlib import Path

import nibabel as nib
import numpy as np
import pydantic
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

REPO = Path(__file__).resolve().parents[1]

SDK_MODULES = (
    "m3fm.registry",
    "m3fm.registry.testing",
    "m3fm.imaging",
    "m3fm.filetypes",
    "m3fm.text",
    "m3fm.findings",
    "m3fm.sentence_pairs",
)



def _sdk_exports():
    """(module name, exported name, object) for every name in every SDK module's __all__."""
    for module_name in SDK_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            yield module_name, name, getattr(module, name, None)


# --- the SDK is defined and complete ----------------------------------------------------------


@pytest.mark.parametrize("module_name", SDK_MODULES)
def test_every_sdk_module_defines_its_public_names(module_name):
    module = importlib.import_module(module_name)
    exported = getattr(module, "__all__", None)
    assert exported, f"{module_name} has no __all__: the SDK is what __all__ lists"
    assert len(set(exported)) == len(exported), f"{module_name}.__all__ repeats a name"
    assert not [name for name in exported if name.startswith("_")]
    assert not [name for name in exported if not hasattr(module, name)], module_name


def _own_doc(obj) -> str | None:
    """The docstring written for `obj` itself, not one inherited from a base class."""
    doc = vars(obj).get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    return doc.strip() if isinstance(doc, str) and doc.strip() else None


def test_every_sdk_function_and_class_has_a_docstring():
    missing = []
    for module_name, name, obj in _sdk_exports():
        if inspect.isfunction(obj) or inspect.isclass(obj):
            if not _own_doc(obj):
                missing.append(f"{module_name}.{name}")
            if inspect.isclass(obj) and module_name != "m3fm.registry":
                missing += [
                    f"{module_name}.{name}.{method}"
                    for method, member in vars(obj).items()
                    if inspect.isfunction(member) and not method.startswith("_")
                    and not _own_doc(member)
                ]
    assert not missing, f"undocumented SDK names (the reference would omit them): {missing}"


# --- paths are taken as str or Path -----------------------------------------------------------


def _members(node: ast.expr) -> list[ast.expr]:
    """The members of a union `a | b | c`, or [node] for anything else."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _members(node.left) + _members(node.right)
    return [node]


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _path_without_str(annotation: str) -> bool:
    """Whether an annotation admits `Path` somewhere without admitting `str` beside it.

    The arguments of a `Callable[...]` are what a callback receives, not what the function
    accepts, and are not checked.
    """

    def check(node: ast.expr) -> bool:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return check(ast.parse(node.value, mode="eval").body)
        members = _members(node)
        if isinstance(node, ast.Subscript) and _name(node.value) in ("Optional", "Union"):
            inner = node.slice
            members = list(inner.elts) if isinstance(inner, ast.Tuple) else [inner]
        names = {_name(member) for member in members}
        if "Path" in names and "str" not in names:
            return True
        for member in members:
            if isinstance(member, ast.Subscript) and _name(member.value) not in (
                "Callable", "Optional", "Union"
            ):
                inner = member.slice
                if any(check(arg) for arg in (inner.elts if isinstance(inner, ast.Tuple)
                                              else [inner])):
                    return True
        return False

    return check(ast.parse(annotation, mode="eval").body)


def _annotation_text(annotation) -> str | None:
    if annotation is inspect.Parameter.empty:
        return None
    return annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)


def _signatures():
    """(qualified name, signature) of every SDK function, constructor and public method."""
    for module_name, name, obj in _sdk_exports():
        qualified = f"{module_name}.{name}"
        if inspect.isfunction(obj):
            yield qualified, inspect.signature(obj)
        elif inspect.isclass(obj):
            # pydantic converts a str to a Path field in its (default) lax mode
            if not (issubclass(obj, pydantic.BaseModel) and not obj.model_config.get("strict")):
                with contextlib.suppress(ValueError):  # an exception's built-in constructor
                    yield qualified, inspect.signature(obj)
            for method, member in vars(obj).items():
                function = getattr(member, "__func__", member)
                if inspect.isfunction(function) and (
                    not method.startswith("_") or method == "__call__"
                ):
                    yield f"{qualified}.{method}", inspect.signature(function)


def test_the_path_annotation_checker():
    assert _path_without_str("Path")
    assert _path_without_str("Path | None")
    assert _path_without_str("Sequence[Path]")
    assert _path_without_str("Optional[Path]")
    assert not _path_without_str("str | Path")
    assert not _path_without_str("str | Path | Traversable")
    assert not _path_without_str("Sequence[str | Path] | None")
    assert not _path_without_str("Callable[[Path], Any]")
    assert not _path_without_str("int")


def test_sdk_functions_take_paths_as_str_or_path():
    found = set()
    for qualified, signature in _signatures():
        for parameter in signature.parameters.values():
            text = _annotation_text(parameter.annotation)
            if text and _path_without_str(text):
                found.add(f"{qualified}({parameter.name})")
    assert not found, (
        "annotate these parameters `str | Path` and convert with Path(...) inside: "
        f"{sorted(found)}")


def test_path_helpers_accept_str(tmp_path):
    from m3fm.filetypes import is_display_image
    from m3fm.sentence_pairs import read_sentence_pairs

    assert is_display_image("scan.PNG") and is_display_image(Path("a/scan.tif"))
    assert not is_display_image(str(tmp_path / "scan.nii.gz"))
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("# by hand\nA cat.\tUn gato.\n", encoding="utf-8")
    assert read_sentence_pairs(str(pairs)) == read_sentence_pairs(pairs) == (
        ("A cat.", "Un gato."),)


# --- plugins, the kit, the scaffold and the example build on the SDK only ---------------------


def _sources():
    """(label, package the file belongs to, source text) of every client of the SDK we ship."""
    for path in sorted((REPO / "plugins").glob("*.py")):
        yield path.relative_to(REPO), "m3fm.plugins", path.read_text(encoding="utf-8")
    yield Path("registry/testing.py"), "m3fm.registry", (
        REPO / "registry" / "testing.py").read_text(encoding="utf-8")
    for path in sorted((REPO / "docs/examples/m3fm-es/m3fm_es").glob("*.py")):
        yield path.relative_to(REPO), "m3fm_es", path.read_text(encoding="utf-8")
    values = {"name": "demo", "kind": "modality", "package": "m3fm-demo",
              "description": "A demo plugin"}
    for path in sorted((REPO / "core/scaffold/templates").glob("*.py.tmpl")):
        text = string.Template(path.read_text(encoding="utf-8")).safe_substitute(values)
        yield path.relative_to(REPO), "m3fm_demo", text


def _imports(tree: ast.AST, package: str):
    """(absolute module, imported name or None, line) of every import in a module's tree."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module
            for alias in node.names:
                yield module, alias.name, node.lineno


@pytest.mark.parametrize("label, package, source",
                         [pytest.param(*entry, id=str(entry[0])) for entry in _sources()])
def test_sdk_clients_import_only_sdk_names(label, package, source):
    problems = []
    for module, name, line in _imports(ast.parse(source), package):
        if module != "m3fm" and not module.startswith("m3fm."):
            continue  # the standard library, third parties, or the plugin's own package
        if package == "m3fm.plugins" and module.startswith("m3fm.plugins"):
            continue  # a built-in plugin's own modules
        if module not in SDK_MODULES:
            problems.append(f"line {line}: {module} is not an SDK module")
        elif name not in (None, "*") and name not in importlib.import_module(module).__all__:
            problems.append(f"line {line}: {name} is not in {module}.__all__")
    assert not problems, f"{label} reaches past the plugin SDK: {problems}"


# --- read_image's axes ------------------------------------------------------------------------

CT_SMALL = get_testdata_file("CT_small.dcm")


def _rescaled(dataset: pydicom.Dataset, pixels: np.ndarray) -> np.ndarray:
    return pixels * float(dataset.RescaleSlope) + float(dataset.RescaleIntercept)


def _ct_slice(path: Path, pixels: np.ndarray, **tags) -> pydicom.Dataset:
    """CT_small.dcm with `pixels` (int16, rows x columns) and some tags changed."""
    dataset = pydicom.dcmread(CT_SMALL)
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.PixelData = pixels.astype(np.int16).tobytes()
    for name, value in tags.items():
        setattr(dataset, name, value)
    dataset.save_as(path)
    return dataset


def _gradient(rows: int, columns: int, offset: int = 0) -> np.ndarray:
    """Pixels that differ along both axes, so a transposition or flip shows."""
    return offset + 10 * np.arange(rows)[:, None] + np.arange(columns)[None, :]


def test_a_single_dicom_file_reads_as_channel_rows_columns(tmp_path):
    from m3fm.imaging import read_image

    pixels = _gradient(128, 64)
    dataset = _ct_slice(tmp_path / "slice.dcm", pixels)
    image = read_image(str(tmp_path / "slice.dcm"))
    assert tuple(image.shape) == (1, 128, 64)
    np.testing.assert_allclose(image[0].numpy(), _rescaled(dataset, pixels))
    # the affine is in RAS: DICOM's LPS position with x and y negated; a step along the rows
    # axis moves down the column direction (0, 1, 0 in LPS), i.e. (0, -1, 0) in RAS
    x, y, z = (float(v) for v in dataset.ImagePositionPatient)
    row_spacing = float(dataset.PixelSpacing[0])
    np.testing.assert_allclose(image.affine[:3, 3].numpy(), (-x, -y, z), rtol=1e-5)
    np.testing.assert_allclose(image.affine[:3, 0].numpy(), (0.0, -row_spacing, 0.0), atol=1e-6)


def test_a_picture_reads_as_channel_rows_columns(tmp_path):
    from PIL import Image

    from m3fm.imaging import read_image

    pixels = _gradient(40, 24).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "picture.png")
    image = read_image(tmp_path / "picture.png")
    assert tuple(image.shape) == (1, 40, 24)
    np.testing.assert_array_equal(image[0].numpy(), pixels)


def test_a_dicom_series_stacks_slices_last_in_instance_number_order(tmp_path, caplog):
    from m3fm.imaging import read_image

    series = tmp_path / "series"
    series.mkdir()
    uid = generate_uid()
    template = pydicom.dcmread(CT_SMALL)
    x, y, z = (float(v) for v in template.ImagePositionPatient)
    # file names a, b, c hold instances 2, 3, 1: name order is not slice order
    for name, number in (("a", 2), ("b", 3), ("c", 1)):
        _ct_slice(series / f"{name}.dcm", _gradient(128, 64, offset=1000 * number),
                  SeriesInstanceUID=uid, SOPInstanceUID=generate_uid(), InstanceNumber=number,
                  ImagePositionPatient=[x, y, z + 2.5 * number])
    no_number = _ct_slice(series / "d.dcm", _gradient(128, 64, offset=9000),
                          SeriesInstanceUID=uid, SOPInstanceUID=generate_uid(),
                          ImagePositionPatient=[x, y, z + 10.0])
    del no_number.InstanceNumber
    no_number.save_as(series / "d.dcm")

    with caplog.at_level(logging.WARNING):
        image = read_image(str(series))
    assert tuple(image.shape) == (1, 128, 64, 3)
    for index, number in enumerate((1, 2, 3)):
        np.testing.assert_allclose(image[0, :, :, index].numpy(),
                                   _rescaled(template, _gradient(128, 64, offset=1000 * number)))
    assert "InstanceNumber" in caplog.text


def test_a_nifti_volume_keeps_its_stored_voxel_axes(tmp_path):
    from m3fm.imaging import read_image

    voxels = np.arange(5 * 7 * 3, dtype=np.float32).reshape(5, 7, 3)
    affine = np.diag([-1.5, 2.0, 3.0, 1.0])  # a flipped first axis: not reoriented on reading
    affine[:3, 3] = (10.0, -20.0, 30.0)
    nib.save(nib.Nifti1Image(voxels, affine), tmp_path / "volume.nii.gz")
    image = read_image(tmp_path / "volume.nii.gz")
    assert tuple(image.shape) == (1, 5, 7, 3)
    np.testing.assert_array_equal(image[0].numpy(), voxels)
    np.testing.assert_allclose(image.affine.numpy(), affine)  # voxel index -> world (RAS)
