"""Repeated clauses in generated reports (dropped after decoding, or blocked while decoding)
and the generator's modality conditioning."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from generation_fixtures import overfit

from m3fm.generation.bridge import MemoryBank
from m3fm.generation.config import DecodeConfig, GeneratorConfig
from m3fm.generation.model import MultiMedLM
from m3fm.generation.repetition import ClauseTokens, RepeatedClauseBlocker, drop_repeated_clauses
from m3fm.generation.reporting import ReportModel, ReportModelConfig
from m3fm.generation.task import modality_ids
from m3fm.recipes import load_recipe
from m3fm.registry import ConfigError, UsageError
from m3fm.tokenizer import decode_report, train_tokenizer

TINY = dict(hidden_size=32, prefix_tokens=2, encoder_layers=1, decoder_layers=1, num_heads=2,
            intermediate_size=64, dropout=0.0, max_length=48)
LOOP = "A, b, a, b, a, b, a, b, a, b, a, b."
"""A report that loops, as the bundled model's do."""


def clauses(text: str) -> list[str]:
    """The report's clauses, stripped and lower-cased, punctuation aside."""
    return [part.strip().lower() for part in re.split(r"[,;，；、.!?。！？]", text)
            if part.strip()]


@pytest.mark.parametrize(("text", "lang", "expected"), [
    ("A, B, A, C.", "en", "A, B, C."),
    ("The texture of both lungs was enhanced, the texture of both lungs was enhanced, "
     "the texture of both lungs was enhanced. No effusion. No effusion.", "en",
     "The texture of both lungs was enhanced. No effusion."),
    ("No effusion. No effusion, heart size is normal; no effusion.", "en",
     "No effusion. Heart size is normal."),
    ("Heart normal; 1,000 cells, heart normal.", "en", "Heart normal; 1,000 cells."),
    ("两肺纹理增强，两肺纹理增强，未见异常。", "zh", "两肺纹理增强，未见异常。"),
    ("两肺纹理增强。心影不大；两肺纹理增强、未见异常。心影不大。", "zh",
     "两肺纹理增强。心影不大；未见异常。"),
])
def test_repeated_clauses_are_dropped_with_punctuation_well_formed(text, lang, expected):
    assert drop_repeated_clauses(text, lang) == expected


@pytest.mark.parametrize(("text", "lang"), [
    ("The lungs are clear, without effusion. The heart is normal in size.", "en"),
    ("双肺未见异常密度影。右肺下叶可见磨玻璃影，边界不清。", "zh"),
    ("", "en"),
])
def test_a_report_without_repeats_is_unchanged(text, lang):
    assert drop_repeated_clauses(text, lang) == text


def test_the_blocker_bans_the_token_that_would_finish_an_earlier_clause():
    blocker = RepeatedClauseBlocker(ClauseTokens(boundaries=frozenset({0}),
                                                 ignored=frozenset({1})))
    assert blocker.banned([1, 5, 6, 0, 1, 5]) == {6}  # "5 6," then "5": not 6 again
    assert blocker.banned([5, 6, 0]) == set()  # a longer clause may start anew
    assert blocker.banned([5, 0, 1]) == {5}
    assert blocker.banned([5, 6, 7]) == set()


@pytest.fixture(scope="module")
def looping() -> tuple[MultiMedLM, torch.Tensor]:
    """A tiny English generator overfitted to write the looping report LOOP."""
    torch.manual_seed(0)
    tokenizer = train_tokenizer([LOOP] * 4, vocab_size=300)
    model = MultiMedLM(GeneratorConfig(languages=("en",), **TINY), embed_dim=8,
                       tokenizer=tokenizer)
    embeddings = F.normalize(torch.randn(1, 8), dim=-1)
    labels = model.tokenize_targets([LOOP])
    return overfit(model, embeddings, labels), embeddings


def _reports(model: MultiMedLM, embeddings: torch.Tensor, decode: DecodeConfig) -> list[str]:
    """What a ReportModel with this generator writes (memory bridge onto the embeddings)."""
    reporter = SimpleNamespace(generator=model, bank=MemoryBank({"en": embeddings}),
                               decode=decode, device=torch.device("cpu"))
    return ReportModel.reports_from_embeddings(reporter, embeddings, "en")


def test_no_repeated_clause_in_decoded_reports_of_an_overfitted_tiny_model(looping):
    model, embeddings = looping
    [kept] = _reports(model, embeddings, DecodeConfig(repeated_clauses="keep"))
    assert len(clauses(kept)) > len(set(clauses(kept))) >= 2  # the loop is learnt
    for decode in (DecodeConfig(), DecodeConfig(num_beams=3),
                   DecodeConfig(repeated_clauses="block")):
        [report] = _reports(model, embeddings, decode)
        assert report == "A, b."  # the loop's clauses once, well punctuated


def test_blocking_leaves_no_clause_twice_in_the_decoded_tokens(looping):
    model, embeddings = looping
    [ids] = model.generate(embeddings, "en", DecodeConfig(repeated_clauses="block"))
    written = [part.strip() for part in re.split("[,.]", decode_report(model.tokenizer, ids))
               if part.strip()]
    assert written == list(dict.fromkeys(written))  # token for token: "A" is not "a"
    [loop] = model.generate(embeddings, "en", DecodeConfig(repeated_clauses="keep"))
    assert len(ids) < len(loop)


def test_repetition_penalty_is_validated_and_reaches_decoding(looping):
    model, embeddings = looping
    with pytest.raises(ValueError):
        DecodeConfig(repetition_penalty=0.5)
    plain = model.generate(embeddings, "en", DecodeConfig(repeated_clauses="keep"))
    penalised = model.generate(embeddings, "en", DecodeConfig(repetition_penalty=50.0))
    assert penalised != plain


def _generator(modalities: tuple[str, ...] = ()) -> MultiMedLM:
    torch.manual_seed(0)
    tokenizer = train_tokenizer(["No effusion.", "两肺纹理增强。"], vocab_size=200)
    return MultiMedLM(GeneratorConfig(languages=("en", "zh"), modalities=modalities, **TINY),
                      embed_dim=8, tokenizer=tokenizer)


def test_a_modality_token_follows_the_language_token():
    model = _generator(("ct", "cxr")).eval()
    embeddings = torch.randn(2, 8)
    languages = torch.zeros(2, dtype=torch.long)
    ct = model.encoder_inputs(embeddings, languages, torch.tensor([0, 0]))
    cxr = model.encoder_inputs(embeddings, languages, torch.tensor([1, 1]))
    unknown = model.encoder_inputs(embeddings, languages)
    assert ct.shape == (2, 2 + model.config.prefix_tokens, 32)
    assert not torch.equal(ct[:, 1], cxr[:, 1]) and not torch.equal(ct[:, 1], unknown[:, 1])
    assert torch.equal(ct[:, [0, 2, 3]], cxr[:, [0, 2, 3]])
    assert model.modality_id("cxr") == 1 and model.modality_id(None) == 2
    assert model.generate(embeddings, "en", DecodeConfig(max_new_tokens=3), modality="ct")
    with pytest.raises(UsageError, match="knows no modality 'mri'; it knows ct, cxr"):
        model.generate(embeddings, "en", DecodeConfig(), modality="mri")


def test_without_modalities_the_generator_is_todays_and_ignores_the_modality():
    old_style = GeneratorConfig.model_validate_json(
        '{"config_version": 1, "languages": ["en", "zh"], "prefix_tokens": 2, '
        '"hidden_size": 32, "encoder_layers": 1, "decoder_layers": 1, "num_heads": 2, '
        '"intermediate_size": 64, "dropout": 0.0, "max_length": 48, "noise_std": 0.1}'
    )
    assert old_style.modalities == () and old_style.conditioning_tokens == 1
    model = _generator()
    torch.manual_seed(0)
    old = MultiMedLM(old_style, 8, model.tokenizer)
    assert old.state_dict().keys() == model.state_dict().keys()
    assert not any(key.startswith("modality_tokens") for key in model.state_dict())
    assert ({key: value.shape for key, value in old.state_dict().items()}
            == {key: value.shape for key, value in model.state_dict().items()})
    conditioned = _generator(("ct",)).state_dict()
    assert set(conditioned) - set(model.state_dict()) == {"modality_tokens.weight"}
    embeddings = torch.randn(1, 8)
    decode = DecodeConfig(max_new_tokens=4)
    assert (model.eval().generate(embeddings, "en", decode, modality="mri")
            == model.generate(embeddings, "en", decode))


def test_training_rows_get_their_modality_or_the_unknown_token():
    assert modality_ids((), ["ct", None]) is None
    assert modality_ids(("ct", "cxr"), ["cxr", None, "ct", "mri"]).tolist() == [1, 2, 0, 2]


def test_the_recipe_conditions_on_the_alignment_models_modalities_by_default():
    recipe = load_recipe("cov-ctr-zh-zeroshot")
    assert recipe.model.condition_on_modality
    config = recipe.model.generator_config(("ct", "cxr"))
    assert type(config) is GeneratorConfig and config.modalities == ("ct", "cxr")
    saved = ReportModelConfig(generator=config).model_dump_json()
    assert "condition_on_modality" not in saved
    off = load_recipe("cov-ctr-zh-zeroshot", {"model.condition_on_modality": "false"})
    assert off.model.generator_config(("ct",)).modalities == ()
    named = load_recipe("cov-ctr-zh-zeroshot", {"model.modalities": "[cxr]"})
    assert named.model.generator_config(("ct", "cxr")).modalities == ("cxr",)
    with pytest.raises(ConfigError, match="condition_on_modality"):
        load_recipe("cov-ctr-zh-zeroshot", {"model.modalities": "[ct]",
                                            "model.condition_on_modality": "false"})


def test_a_seeded_share_of_training_rows_learns_the_unknown_modality_token():
    from m3fm.generation.task import MODALITY_DROPOUT

    rows = ["ct"] * 2000
    first, again = (modality_ids(("ct", "cxr"), rows, torch.Generator().manual_seed(3))
                    for _ in range(2))
    assert torch.equal(first, again)  # a resumed run draws the same
    assert abs((first == 2).float().mean().item() - MODALITY_DROPOUT) < 0.03
    assert set(modality_ids(("ct", "cxr"), rows).tolist()) == {0}  # no generator: no dropout


def test_a_modality_never_written_in_a_language_is_decoded_without_its_token():
    bank = MemoryBank({"zh": torch.ones(1, 4), "ct/zh": torch.ones(1, 4)})
    assert bank.covers("ct", "zh") and not bank.covers("cxr", "zh")
