"""The conformance kit: the built-in plugins pass it, and each broken contract is named."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from pydicom.data import get_testdata_file

from m3fm.registry import get_registry
from m3fm.registry.testing import (
    ConformanceError,
    check_language,
    check_modality,
    first_failure,
)

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


# --- first_failure: the kit on the inputs a spec ships, as `m3fm plugins list` runs it -------


class TinyEncoder(torch.nn.Module):
    """A fast stand-in encoder: mean of each input, repeated `width` times."""

    feature_dim = 4

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.width = width

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.flatten(1).mean(1, keepdim=True).repeat(1, self.width)


def test_built_in_plugins_ship_samples_and_pass_the_kit_on_them(tmp_path):
    registry = get_registry()
    for code in ("en", "zh"):
        spec = registry.language(code)
        assert 2 <= len(spec.sample_reports) <= 3
        assert first_failure("language", spec, tmp_path) is None
    for name in ("ct", "cxr"):
        spec = registry.modality(name)
        assert spec.sample_files and all(path.is_file() for path in spec.sample_files)
        assert all("samples" in path.parts for path in spec.sample_files)  # package data
        assert first_failure("modality", spec, tmp_path) is None
    assert first_failure("dataset", registry.dataset("manifest"), tmp_path) is None


def test_first_failure_checks_a_language_on_its_sample_reports(tmp_path):
    english = get_registry().language("en")
    shouting = english.model_copy(update={"normalize": lambda text: text + "!"})
    failure = first_failure("language", shouting, tmp_path)
    assert failure.check == "normalize is idempotent"
    assert repr(english.sample_reports[0] + "!") in failure.problem


def test_a_language_without_sample_reports_is_checked_on_its_prompts(tmp_path):
    english = get_registry().language("en")
    bare = english.model_copy(update={"sample_reports": ()})
    assert first_failure("language", bare, tmp_path) is None
    # Only the prompts contain "COVID-19": a tokenizer that drops digits fails on them.
    lossy = bare.model_copy(update={"tokenize_words": lambda text: text.replace("19", "").split(),
                                    "join_words": " ".join})
    failure = first_failure("language", lossy, tmp_path)
    assert failure.check == "join_words inverts tokenize_words" and "COVID-19" in failure.problem


def test_an_exception_from_plugin_code_fails_the_check_it_was_raised_in(tmp_path):
    english = get_registry().language("en")

    def split_sentences(text):
        raise RuntimeError("sentence model not downloaded\nsecond line")

    broken = english.model_copy(update={"split_sentences": split_sentences})
    failure = first_failure("language", broken, tmp_path)
    assert failure.check == "split_sentences"
    assert failure.problem == "raised RuntimeError: sentence model not downloaded"
    with pytest.raises(ConformanceError, match="split_sentences: raised RuntimeError"):
        check_language(broken, SAMPLES["en"])  # the plugin's own tests see the same
    odd_template = english.model_copy(update={"positive_templates": ("{finding} in {lobe}.",),
                                              "sample_reports": ()})
    assert first_failure("language", odd_template, tmp_path).check == "prompts"


def test_a_modality_without_sample_files_is_checked_without_them(tmp_path):
    cxr = get_registry().modality("cxr")
    bare = cxr.model_copy(update={"sample_files": (), "build_encoder": lambda _: TinyEncoder()})
    assert first_failure("modality", bare, tmp_path) is None
    wide = bare.model_copy(update={"build_encoder": lambda _: TinyEncoder(width=6)})
    failure = first_failure("modality", wide, tmp_path)
    assert failure.check == "encoder output"
    assert failure.problem == "a batch of 2 × (1, 224, 224) gave (2, 6)"

    def no_weights(options):
        raise FileNotFoundError("weights.safetensors")

    assert first_failure("modality", bare.model_copy(update={"build_encoder": no_weights}),
                         tmp_path).check == "encoder builds"
    lenient = bare.model_copy(update={"load": lambda path: torch.rand(1, 224, 224)})
    assert first_failure("modality", lenient, tmp_path).check == "corrupt file"


def test_a_modality_is_checked_on_the_sample_files_it_ships(tmp_path):
    cxr = get_registry().modality("cxr")
    tiny = cxr.model_copy(update={"build_encoder": lambda _: TinyEncoder()})
    assert first_failure("modality", tiny, tmp_path) is None
    missing = tiny.model_copy(update={"sample_files": (tmp_path / "gone.png",)})
    failure = first_failure("modality", missing, tmp_path)
    assert failure.check == "load" and "gone.png could not be read" in failure.problem
