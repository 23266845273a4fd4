"""The conformance kit: the built-in plugins pass it, and each broken contract is named."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from m3fm.registry import get_registry
from m3fm.registry.testing import ConformanceError, check_language, check_modality

SAMPLES = {
    "en": ["The heart is normal in size. No pleural effusion.", "XXXX 1. Stable cardiomegaly."],
    "zh": ["胸廓对称，纵隔心影居中。双肺纹理增强。", "右肺下叶可见磨玻璃影，边缘模糊。"],
}


def png(path: Path) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (60, 80), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("code", ["en", "zh"])
def test_built_in_languages_conform(code):
    passed = check_language(get_registry().language(code), SAMPLES[code])
    assert "metric tokenizer" in passed and "prompts" in passed


def test_built_in_modalities_conform(tmp_path):
    volume = tmp_path / "volume.nii.gz"
    data = np.random.default_rng(0).normal(0, 300, (24, 24, 12)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), volume)
    ct = [png(tmp_path / "slice.png"), Path(get_testdata_file("CT_small.dcm")), volume]
    assert "corrupt file" in check_modality(get_registry().modality("ct"), ct, tmp_path)
    check_modality(get_registry().modality("cxr"), [png(tmp_path / "chest.png")], tmp_path)


def test_a_broken_language_is_told_what_to_fix():
    english = get_registry().language("en")
    shouting = english.model_copy(update={"normalize": lambda text: text + "!"})
    with pytest.raises(ConformanceError, match=r"normalize is idempotent: .*fixed point"):
        check_language(shouting, SAMPLES["en"])
    lossy = english.model_copy(update={"join_words": "".join})
    with pytest.raises(ConformanceError, match="join_words inverts tokenize_words"):
        check_language(lossy, SAMPLES["en"])
    unknown = english.model_copy(update={"metric_tokenizer": "whitespace"})
    with pytest.raises(ConformanceError, match="sacrebleu has no tokenizer 'whitespace'"):
        check_language(unknown, SAMPLES["en"])


def test_a_broken_modality_is_told_what_to_fix(tmp_path):
    cxr = get_registry().modality("cxr")
    sample = [png(tmp_path / "chest.png")]
    half = cxr.model_copy(update={"load": lambda path: cxr.load(path)[:, ::2]})
    with pytest.raises(ConformanceError, match=r"load shape: .*resize to a declared shape"):
        check_modality(half, sample, tmp_path)
    with pytest.raises(ConformanceError, match=r"file types: notes\.txt"):
        check_modality(cxr, [tmp_path / "notes.txt"], tmp_path)
    lenient = cxr.model_copy(update={"load": lambda path: cxr.load(sample[0])})
    with pytest.raises(ConformanceError, match=r"corrupt file: .*raise on unreadable input"):
        check_modality(lenient, sample, tmp_path)


def test_a_sample_the_plugin_cannot_read_is_named(tmp_path):
    cxr = get_registry().modality("cxr")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(ConformanceError, match=r"load: broken\.png could not be read"):
        check_modality(cxr, [broken], tmp_path)
