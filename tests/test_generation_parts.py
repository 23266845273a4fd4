"""The generator's parts: targets, decoding (cached or not, greedy or beam), the bridge,
baselines and recipes."""

from __future__ import annotations

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from generation_fixtures import overfit

from m3fm.alignment.retrieval import RetrievalSet
from m3fm.checkpoint import CheckpointError
from m3fm.generation.bridge import BANK_FILE, MemoryBank, bridge
from m3fm.generation.config import DecodeConfig, GeneratorConfig
from m3fm.generation.evaluation import baseline_reports
from m3fm.generation.model import IGNORE_INDEX, MultiMedLM
from m3fm.generation.reporting import without_unfinished_sentence
from m3fm.generation.task import Examples, memory_bank
from m3fm.recipes import GenerateRecipe, available_recipes, load_recipe
from m3fm.registry import ConfigError, Record, UsageError, get_registry
from m3fm.tokenizer import decode_report, train_tokenizer

REPORTS = ["双肺未见异常密度影。", "右肺下叶可见磨玻璃影，边界不清。"]


@pytest.fixture(scope="module")
def memorised() -> tuple[MultiMedLM, torch.Tensor]:
    """A tiny generator overfitted to write REPORTS[i] from embedding i."""
    torch.manual_seed(0)
    tokenizer = train_tokenizer(REPORTS * 4, vocab_size=300)
    config = GeneratorConfig(languages=("zh",), hidden_size=32, prefix_tokens=2,
                             encoder_layers=1, decoder_layers=1, num_heads=2,
                             intermediate_size=64, dropout=0.0, max_length=48)
    model = MultiMedLM(config, embed_dim=8, tokenizer=tokenizer)
    embeddings = F.normalize(torch.randn(2, 8), dim=-1)
    labels = model.tokenize_targets(REPORTS)
    return overfit(model, embeddings, labels), embeddings


def test_targets_end_with_eos_and_pad_with_the_ignored_index(memorised):
    model, _ = memorised
    labels = model.tokenize_targets(REPORTS)
    eos = model.tokenizer.eos_token_id
    short = labels[0][labels[0] != IGNORE_INDEX].tolist()
    assert short[-1] == eos and decode_report(model.tokenizer, short) == REPORTS[0]
    assert (labels[0] == IGNORE_INDEX).any() and labels[1][-1] == eos


@pytest.mark.parametrize(
    "decode",
    [DecodeConfig(), DecodeConfig(num_beams=3, length_penalty=1.2), DecodeConfig(batch_size=1)],
)
def test_decoding_writes_back_what_was_learnt(memorised, decode):
    model, embeddings = memorised
    ids = model.generate(embeddings, "zh", decode)
    assert [decode_report(model.tokenizer, row) for row in ids] == REPORTS


def test_cached_and_uncached_decoding_agree(memorised):
    model, embeddings = memorised
    noise = torch.randn(embeddings.shape, generator=torch.Generator().manual_seed(1))
    noisy = embeddings + 0.3 * noise
    decode = DecodeConfig(max_new_tokens=30)
    assert model.generate(noisy, "zh", decode) == model.generate(
        noisy, "zh", decode, use_cache=False)


def test_max_new_tokens_and_ngram_blocking_bound_the_output(memorised):
    model, embeddings = memorised
    short = model.generate(embeddings, "zh", DecodeConfig(max_new_tokens=3))
    assert all(len(row) <= 3 for row in short)
    longest = model.generate(embeddings + 5, "zh", DecodeConfig(max_new_tokens=500))
    assert all(len(row) <= model.config.max_length for row in longest)  # positions it has
    blocked = model.generate(embeddings, "zh", DecodeConfig(no_repeat_ngram_size=1))
    assert all(len(row) == len(set(row)) for row in blocked)


def test_unknown_language_lists_the_generator_languages(memorised):
    model, embeddings = memorised
    with pytest.raises(UsageError, match="no report generator for 'en'; it writes zh"):
        model.generate(embeddings, "en", DecodeConfig())


def test_memory_bridge_moves_a_query_onto_the_bank_and_noise_leaves_it():
    bank = MemoryBank({"zh": torch.eye(4)[:3]})
    query = F.normalize(torch.tensor([[0.9, 0.4, 0.0, 0.2]]), dim=-1)
    sharp = bridge(query, "zh", DecodeConfig(memory_temperature=1e-3), bank)
    assert torch.allclose(sharp, torch.tensor([[1.0, 0.0, 0.0, 0.0]]), atol=1e-4)
    soft = bridge(query, "zh", DecodeConfig(memory_temperature=10.0), bank)
    assert soft[0, 3] == 0 and torch.allclose(soft.norm(), torch.tensor(1.0))
    assert torch.equal(bridge(query, "zh", DecodeConfig(bridge="noise"), bank), query)


def test_memory_bridge_uses_the_reports_of_the_image_modality_when_it_has_them():
    ct_reports, cxr_reports = torch.eye(4)[:1], torch.eye(4)[1:]
    bank = MemoryBank({"en": torch.cat([ct_reports, cxr_reports]), "ct/en": ct_reports})
    query = F.normalize(torch.ones(1, 4), dim=-1)
    decode = DecodeConfig(memory_temperature=1.0)
    assert torch.allclose(bridge(query, "en", decode, bank, "ct"), ct_reports)
    mixed = bridge(query, "en", decode, bank, "cxr")  # no CXR subset: the whole language
    assert torch.allclose(mixed, torch.full((1, 4), 0.5))
    assert bank.languages == ("en",)


def _examples(count: int) -> Examples:
    return Examples(
        reports=[f"r{i}" for i in range(count)], languages=["en", "zh"] * (count // 2),
        modalities=["ct"] * count, embeddings=torch.randn(count, 4),
        from_text=torch.tensor([True] * (count - 2) + [False] * 2),
    )


def test_memory_bank_keeps_text_examples_and_caps_each_key_with_its_seed():
    examples = _examples(20)
    whole = memory_bank(examples)
    assert whole.sizes == {"en": 9, "ct/en": 9, "zh": 9, "ct/zh": 9}  # image examples left out
    capped = memory_bank(examples, size=4, seed=3)
    assert capped.sizes == {"en": 4, "ct/en": 4, "zh": 4, "ct/zh": 4}
    again = memory_bank(examples, size=4, seed=3)
    assert all(torch.equal(capped.embeddings[k], again.embeddings[k]) for k in capped.sizes)
    rows = {tuple(row.tolist()) for row in whole.embeddings["en"]}
    assert {tuple(row.tolist()) for row in capped.embeddings["en"]} <= rows


def test_memory_bank_round_trips_through_a_file(tmp_path):
    bank = MemoryBank({"en": F.normalize(torch.randn(5, 4), dim=-1)})
    bank.save(tmp_path)
    loaded = MemoryBank.load(tmp_path)
    assert torch.allclose(loaded.embeddings["en"], bank.embeddings["en"], atol=1e-3)


def test_a_language_bank_made_of_its_modalities_banks_is_stored_once(tmp_path):
    ct, cxr, zh = (F.normalize(torch.randn(n, 4), dim=-1) for n in (3, 5, 2))
    bank = MemoryBank({"ct/en": ct, "cxr/en": cxr, "en": torch.cat([ct, cxr]), "zh": zh})
    bank.save(tmp_path)
    stored = safetensors.torch.load_file(str(tmp_path / BANK_FILE))
    assert set(stored) == {"ct/en", "cxr/en", "zh"}  # en is ct/en then cxr/en
    loaded = MemoryBank.load(tmp_path)
    assert list(loaded.embeddings) == list(bank.embeddings) and loaded.languages == ("en", "zh")
    for key, vectors in bank.embeddings.items():
        assert torch.allclose(loaded.embeddings[key], vectors, atol=1e-3)
    # a language bank in another order is a different bank: stored in full
    MemoryBank({"ct/en": ct, "cxr/en": cxr, "en": torch.cat([cxr, ct])}).save(tmp_path)
    assert "en" in safetensors.torch.load_file(str(tmp_path / BANK_FILE))


@pytest.mark.parametrize("metadata", [
    {"composed": "{not json"},
    {"composed": '{"en": ["ct/en", "absent/en"]}'},
    {"composed": '["en"]'},
    {"order": '["en", "fr"]'},
])
def test_a_bank_file_whose_metadata_lies_is_one_checkpoint_error(tmp_path, metadata):
    tensors = {"ct/en": torch.ones(2, 4).half(), "en": torch.ones(2, 4).half()}
    safetensors.torch.save_file(tensors, str(tmp_path / BANK_FILE), metadata=metadata)
    with pytest.raises(CheckpointError, match="metadata does not match its tensors"):
        MemoryBank.load(tmp_path)


def test_a_bank_file_without_metadata_still_loads(tmp_path):
    vectors = F.normalize(torch.randn(3, 4), dim=-1)
    safetensors.torch.save_file({"en": vectors.half()}, str(tmp_path / BANK_FILE))
    assert torch.allclose(MemoryBank.load(tmp_path).embeddings["en"], vectors, atol=1e-3)


class _NearestFirst:
    """Stands in for the embedder: image i is nearest to the i-th sorted report."""

    def embed_images(self, images, modality, cache=None):
        return torch.eye(3)[: len(images)]

    def embed_texts(self, texts, lang):
        return torch.eye(3)[: len(texts)]


def _record(split: str, image: str | None, report: str, covid: int) -> Record:
    return Record(id=report, dataset="test", split=split, modality="ct", image=image,
                  language="en", report=report, labels={"covid19": covid}, source="test")


def test_baselines_answer_by_frequency_label_and_nearest_report():
    train = [_record("train", f"/t{i}.png", text, covid) for i, (text, covid) in enumerate(
        [("A normal chest.", 0), ("A normal chest.", 0), ("Ground glass opacity.", 1)])]
    val = [_record("val", "/v0.png", "x.", 1), _record("val", "/v1.png", "y.", 0)]
    subset = RetrievalSet("ct", "en", (val[0].image, val[1].image), ("X.", "Y."))
    answers = dict(baseline_reports(subset, train, train + val, _NearestFirst(), None, seed=0))
    assert answers["most-frequent"] == ["A normal chest."] * 2
    assert answers["random-same-label"] == ["Ground glass opacity.", "A normal chest."]
    assert answers["nearest-report"] == ["A normal chest.", "Ground glass opacity."]


def test_every_shipped_generate_recipe_names_a_shipped_alignment_recipe():
    shipped = available_recipes()
    generate = [load_recipe(name) for name in shipped]
    generate = [recipe for recipe in generate if isinstance(recipe, GenerateRecipe)]
    assert {r.name for r in generate} >= {
        f"cov-ctr-{lang}-{setting}" for lang in ("en", "zh")
        for setting in ("zeroshot", "fewshot", "supervised")} | {"m3fm-small"}
    for recipe in generate:
        assert recipe.align.recipe in shipped
        assert set(recipe.model.languages) <= set(load_recipe(recipe.align.recipe).model.languages)
        for language in recipe.model.languages:
            get_registry().language(language)
    settings = {r.name: r.data.image_pairs for r in generate}
    assert settings["cov-ctr-zh-zeroshot"] == 0 and settings["cov-ctr-zh-fewshot"] == 0.1
    assert settings["cov-ctr-zh-supervised"] == 1


def test_generate_recipe_needs_an_alignment_source():
    with pytest.raises(ConfigError, match=r"give align\.recipe or align\.checkpoint"):
        load_recipe("cov-ctr-zh-zeroshot", {"align.recipe": "null"})


@pytest.mark.parametrize(
    ("lang", "text", "kept"),
    [
        ("zh", "双肺未见异常密度影。纵隔居中，未见肿大淋巴", "双肺未见异常密度影。"),
        ("en", "No abnormal density. The mediastinum is cent", "No abnormal density."),
        ("en", "The lungs are clear and the hea", "The lungs are clear and the hea"),
    ],
)
def test_a_report_cut_off_at_the_length_limit_loses_its_unfinished_sentence(lang, text, kept):
    assert without_unfinished_sentence(text, get_registry().language(lang)) == kept


def test_a_language_without_finding_extractor_gets_no_clinical_scores(monkeypatch):
    from m3fm.generation import evaluation
    from m3fm.registry import get_registry

    without = get_registry().language("en").model_copy(update={"extract_findings": None})

    class OnlyThisLanguage:
        def language(self, code):
            return without

    monkeypatch.setattr(evaluation, "get_registry", OnlyThisLanguage)
    scores = evaluation.score_reports(["No pleural effusion."], ["No pleural effusion."], "en")
    assert scores["BLEU-4"] > 0
    assert {scores[name] for name in evaluation.CLINICAL_METRICS} == {None}
