"""Decoding precision (`DecodeConfig.precision`) and the throughput benchmark, on a tiny
random report model: fp32 writes what it wrote before, bf16 runs, the benchmark's main runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from alignment_fixtures import TINY_MODEL
from click.testing import CliRunner
from generation_fixtures import TINY_GENERATOR
from pydantic import ValidationError

from m3fm.alignment.model import MultiMedCLIP
from m3fm.benchmarks import throughput
from m3fm.checkpoint import save_model_files, write_directory_atomically
from m3fm.embedding import autocast_dtype, computing_in, native_bf16, resolved_precision
from m3fm.generation.bridge import MemoryBank
from m3fm.generation.config import DecodeConfig
from m3fm.generation.model import MultiMedLM
from m3fm.generation.reporting import ReportModel, ReportModelConfig, save_report_artifacts
from m3fm.recipes import load_recipe
from m3fm.tokenizer import train_tokenizer

CPU = torch.device("cpu")
NO_NATIVE_BF16 = pytest.mark.skipif(
    not native_bf16(CPU), reason="this CPU has neither AMX nor AVX512-BF16: auto means fp32")


def _overrides(pairs: list[str]) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in pairs)


@pytest.fixture(scope="module")
def parts():
    """The parts of a tiny random report model (zh, CT), as the constructor takes them."""
    torch.manual_seed(0)
    tokenizer = train_tokenizer(["Ground glass opacity.", "双肺未见异常。"] * 3, vocab_size=150)
    align = MultiMedCLIP(load_recipe("cov-ctr-align", _overrides(TINY_MODEL)).model,
                         tokenizer).eval()
    recipe = load_recipe("cov-ctr-zh-zeroshot", _overrides(TINY_GENERATOR))
    generator = MultiMedLM(recipe.model, align.config.embed_dim, tokenizer).eval()
    bank = MemoryBank({lang: torch.randn(3, align.config.embed_dim)
                       for lang in recipe.model.languages})
    return align, generator, bank, ReportModelConfig(generator=recipe.model, decode=recipe.decode)


@pytest.fixture(scope="module")
def checkpoint(parts, tmp_path_factory) -> Path:
    align, generator, bank, config = parts
    root = tmp_path_factory.mktemp("throughput") / "report"

    def fill(directory: Path) -> None:
        save_model_files(directory, generator, metadata={"task": "test"},
                         artifacts=lambda d: save_report_artifacts(d, align, config, bank))

    write_directory_atomically(root, fill)
    return root


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(3, 1, 64, 64)


def test_precision_is_a_validated_decoding_option():
    assert DecodeConfig().precision == "auto"
    assert DecodeConfig(precision="bf16").precision == "bf16"
    assert DecodeConfig(precision="bf16-images").precision == "bf16-images"
    with pytest.raises(ValidationError):
        DecodeConfig(precision="fp16")
    # A checkpoint config written before the option loads, with the default.
    old = DecodeConfig().model_dump(exclude={"precision"})
    assert DecodeConfig.model_validate(old).precision == "auto"


def test_precision_means_autocast_only_where_bf16_is_asked_for():
    for part in ("images", "decoder"):
        assert autocast_dtype("fp32", CPU, part) is None
        assert autocast_dtype("bf16", CPU, part) is torch.bfloat16
    assert autocast_dtype("bf16-images", CPU, "images") is torch.bfloat16
    assert autocast_dtype("bf16-images", CPU, "decoder") is None
    assert autocast_dtype("auto", CPU, "decoder") is None
    native = torch.bfloat16 if native_bf16(CPU) else None
    assert autocast_dtype("auto", CPU, "images") is native
    assert resolved_precision("auto", CPU) == ("bf16-images" if native else "fp32")
    with pytest.raises(ValueError):
        autocast_dtype("fp16", CPU)
    with computing_in("fp32", CPU):
        assert not torch.is_autocast_enabled("cpu")
    with computing_in("bf16-images", CPU, "images"):
        assert torch.is_autocast_enabled("cpu")


def test_fp32_writes_what_it_wrote_before(parts, checkpoint, images):
    """The loaded model (channels-last image tower) in fp32 against the model as built, in
    plain fp32 as before the option: the same reports, embeddings equal to rounding."""
    align, generator, bank, config = parts
    before = ReportModel(align, generator, bank, config.decode)
    fp32 = config.decode.model_copy(update={"precision": "fp32"})
    loaded = ReportModel.from_pretrained(checkpoint)
    with torch.no_grad():
        expected = align.encode_image("ct", images)
    embeddings = loaded.embed_images(list(images), modality="ct", precision="fp32")
    assert torch.allclose(embeddings, expected, atol=1e-6)
    assert embeddings.dtype == torch.float32
    reports = loaded.reports_from_embeddings(expected, "zh", fp32, modality="ct")
    assert reports == before.reports_from_embeddings(expected, "zh", fp32, modality="ct")


def test_auto_is_fp32_without_native_bf16(checkpoint, images):
    if native_bf16(CPU):
        pytest.skip("this CPU has native bf16: auto means bf16 here")
    model = ReportModel.from_pretrained(checkpoint)
    decode = model.decode
    auto = model.embed_images(list(images), modality="ct")  # model default: auto
    fp32 = model.embed_images(list(images), modality="ct", precision="fp32")
    assert torch.equal(auto, fp32)
    assert (model.reports_from_embeddings(fp32, "zh", decode, modality="ct")
            == model.reports_from_embeddings(
                fp32, "zh", decode.model_copy(update={"precision": "fp32"}), modality="ct"))


def test_bf16_runs_and_gives_the_same_shapes(checkpoint, images):
    """bf16 autocast runs on any CPU (emulated, slowly, without native bf16)."""
    model = ReportModel.from_pretrained(checkpoint)
    bf16 = model.decode.model_copy(update={"precision": "bf16"})
    embeddings = model.embed_images(list(images), modality="ct", precision="bf16")
    assert embeddings.shape == (3, model.model.config.embed_dim)
    assert embeddings.dtype == torch.float32
    assert torch.allclose(embeddings.norm(dim=-1), torch.ones(3), atol=1e-2)
    reports = model.reports_from_embeddings(embeddings, "zh", bf16, modality="ct")
    assert len(reports) == 3 and all(isinstance(report, str) for report in reports)


@NO_NATIVE_BF16
def test_auto_embeds_in_bf16_with_native_bf16(checkpoint, images):
    model = ReportModel.from_pretrained(checkpoint)
    auto = model.embed_images(list(images), modality="ct")
    fp32 = model.embed_images(list(images), modality="ct", precision="fp32")
    assert not torch.equal(auto, fp32)
    assert torch.allclose(auto, fp32, atol=5e-2)


def test_bf16_images_decodes_in_fp32(checkpoint, images):
    model = ReportModel.from_pretrained(checkpoint)
    fp32 = model.decode.model_copy(update={"precision": "fp32"})
    mixed = model.decode.model_copy(update={"precision": "bf16-images"})
    embeddings = model.embed_images(list(images), modality="ct", precision="fp32")
    assert (model.reports_from_embeddings(embeddings, "zh", mixed, modality="ct")
            == model.reports_from_embeddings(embeddings, "zh", fp32, modality="ct"))


@pytest.fixture
def threads():
    """The benchmark's --threads sets torch's for the process: put them back after."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_benchmark_main_runs(checkpoint, threads):
    result = CliRunner().invoke(throughput.main, [
        "--checkpoint", str(checkpoint), "--inputs", "2", "--precision", "bf16", "--json",
        "--threads", "1", "--matmul-size", "256",
    ])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output.strip().splitlines()[-1])
    assert figures["inputs"] == 2 and figures["chosen_precision"] == "bf16"
    assert set(figures["runs"]) == {"fp32", "bf16", throughput.TRAINING_NETWORKS}
    fp32 = figures["runs"]["fp32"]
    assert set(fp32["stages"]) == {"image_tower", "bridge", "encoder", "decode_steps"}
    assert fp32["gflop"] > 0 and fp32["model_ratio_to_peak"] > 0
    assert figures["peak_gflops_per_s"] >= figures["matmul_gflops_per_s"]["fp32"]
    assert figures["agreement"]["of"] == 2 and 0 <= figures["agreement"]["bleu4"] <= 100
    lean = figures["lean_against_training_networks"]  # the same reports, on either networks
    assert lean["identical"] == 2 and lean["model_speed_up"] > 0


def test_benchmark_prints_figures(checkpoint, threads):
    result = CliRunner().invoke(throughput.main, [
        "--checkpoint", str(checkpoint), "--inputs", "2", "--precision", "fp32",
        "--threads", "1", "--matmul-size", "256",
    ])
    assert result.exit_code == 0, result.output
    assert "GFLOP/s" in result.output and "of peak" in result.output
