"""The shared report vocabulary: special tokens, batches, saving, determinism, lossless decoding."""

from __future__ import annotations

import re

import pytest
import torch

from m3fm.data import read_dataset
from m3fm.registry import InputError, get_registry
from m3fm.tokenizer import SPECIAL_TOKENS, decode_report, load_tokenizer, train_tokenizer

# Normalised reports, as the language plugins write them.
ENGLISH = [
    "The lungs are clear. No pleural effusion.",
    "A 2.5cm nodule in the right upper lobe (segment 2); COVID-19 pneumonia is likely.",
    "Ground-glass opacity in both lower lobes, 1.2 cm x 0.8 cm. The heart is normal.",
    "No pneumothorax. Multiple patchy shadows are seen in both lungs.",
]
CHINESE = [
    "双肺纹理清晰，未见胸腔积液。",
    "右肺上叶见结节影，大小约2.5cm；考虑新型冠状病毒肺炎。",
    "双肺下叶见磨玻璃影（多发），边缘模糊：符合肺炎表现！",
    "纵隔内未见肿大淋巴结，CT值约35 HU。心影不大？",
]
HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(ENGLISH + CHINESE)


def test_special_tokens_have_their_roles_and_the_first_ids(tokenizer):
    for expected_id, (role, token) in enumerate(SPECIAL_TOKENS.items()):
        assert getattr(tokenizer, role) == token
        assert tokenizer.convert_tokens_to_ids(token) == expected_id
    assert set(tokenizer.all_special_tokens) == set(SPECIAL_TOKENS.values())
    assert tokenizer.pad_token_id == 0


def test_special_tokens_in_text_are_not_split(tokenizer):
    tokens = tokenizer.tokenize("The [MASK] is clear.")
    assert "[MASK]" in tokens


def test_a_text_is_wrapped_in_cls_and_sep(tokenizer):
    ids = tokenizer(ENGLISH[0])["input_ids"]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    pair = tokenizer(ENGLISH[0], CHINESE[0])["input_ids"]
    assert pair.count(tokenizer.sep_token_id) == 2 and pair[0] == tokenizer.cls_token_id


def test_batches_are_padded_and_truncated(tokenizer):
    short, long, max_length = "No pneumothorax.", ENGLISH[2], 20
    short_length = len(tokenizer(short)["input_ids"])
    assert short_length < max_length < len(tokenizer(long)["input_ids"])
    batch = tokenizer(
        [short, long], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape == mask.shape == (2, max_length)
    assert mask[0].tolist() == [1] * short_length + [0] * (max_length - short_length)
    assert (ids[0, short_length:] == tokenizer.pad_token_id).all()
    assert ids[1, -1] == tokenizer.sep_token_id and mask[1].all()


def test_save_and_load_give_the_same_tokenizer(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.get_vocab() == tokenizer.get_vocab()
    for role in SPECIAL_TOKENS:
        assert getattr(loaded, role) == getattr(tokenizer, role)
    samples = [*ENGLISH, *CHINESE]
    assert loaded(samples)["input_ids"] == tokenizer(samples)["input_ids"]
    assert decode_report(loaded, loaded(CHINESE[1])["input_ids"]) == CHINESE[1]


def test_loading_from_a_folder_without_a_tokenizer_names_it(tmp_path):
    missing = tmp_path / "checkpoint"
    with pytest.raises(InputError, match=re.escape(str(missing))):
        load_tokenizer(missing)
    missing.mkdir()
    with pytest.raises(InputError, match=re.escape(str(missing))):
        load_tokenizer(missing)


def test_training_is_deterministic():
    first, second = (train_tokenizer(ENGLISH + CHINESE) for _ in range(2))
    assert first.backend_tokenizer.to_str() == second.backend_tokenizer.to_str()


@pytest.mark.parametrize("texts", [[], ["", "  \n"], iter(())])
def test_training_on_no_text_is_refused(texts):
    with pytest.raises(ValueError, match="no text"):
        train_tokenizer(texts)


def test_samples_are_in_the_language_plugins_normal_form():
    registry = get_registry()
    for language, samples in (("en", ENGLISH), ("zh", CHINESE)):
        normalize = registry.language(language).normalize
        assert [normalize(text) for text in samples] == samples


@pytest.mark.parametrize("text", ENGLISH + CHINESE)
def test_decoding_gives_back_the_normalised_text(tokenizer, text):
    assert decode_report(tokenizer, tokenizer(text)["input_ids"]) == text


def test_decoding_drops_generator_markers_and_padding(tokenizer):
    ids = tokenizer(ENGLISH[1], add_special_tokens=False)["input_ids"]
    generated = torch.tensor(
        [tokenizer.bos_token_id, *ids, tokenizer.eos_token_id, tokenizer.pad_token_id]
    )
    assert decode_report(tokenizer, generated) == ENGLISH[1]


def test_unknown_characters_stay_visible_one_by_one(tokenizer):
    ids = tokenizer("未见异常。")["input_ids"]  # 异, 常 are not in the training texts
    assert decode_report(tokenizer, ids) == "未见[UNK][UNK]。"


def test_every_han_character_and_full_width_mark_is_a_token_of_its_own(tokenizer):
    for text in CHINESE:
        tokens = tokenizer.tokenize(text)
        for token in tokens:
            if token != "▁" and not token.isascii():  # "▁" alone: the space before a report
                assert len(token) == 1, (token, text)
        assert [token for token in tokens if HAN.search(token)] == HAN.findall(text)


def test_digits_are_tokens_of_their_own(tokenizer):
    tokens = tokenizer.tokenize("A 12.5cm mass.")
    assert tokens[tokens.index("1") : tokens.index("5") + 1] == ["1", "2", ".", "5"]


def test_any_ascii_word_is_known_with_its_case(tokenizer):
    text = "Metallic QRS artefact at 10:45, 3/4 of the way (Zygote-like)."
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert decode_report(tokenizer, ids) == text


@pytest.mark.data
def test_real_reports_of_both_languages(data_root):
    registry = get_registry()
    reports: dict[tuple[str, str], list[str]] = {}
    for record in read_dataset(data_root / "cov-ctr").records:
        normal = registry.language(record.language).normalize(record.report)
        reports.setdefault((record.split, record.language), []).append(normal)
    tokenizer = train_tokenizer(reports["train", "en"] + reports["train", "zh"])
    retrained = train_tokenizer(reports["train", "en"] + reports["train", "zh"])
    assert retrained.backend_tokenizer.to_str() == tokenizer.backend_tokenizer.to_str()
    vocabulary = tokenizer.get_vocab()
    print(f"\nvocabulary: {len(vocabulary)} tokens")

    for language in ("en", "zh"):
        val = reports["val", language]
        encoded = tokenizer(val, add_special_tokens=False)["input_ids"]
        token_count = sum(map(len, encoded))
        unknown = sum(ids.count(tokenizer.unk_token_id) for ids in encoded)
        print(
            f"{language}: {token_count / len(val):.1f} tokens per val report,"
            f" [UNK] {unknown / token_count:.2%}"
        )
        assert unknown / token_count < 0.01, language
        for report, ids in zip(val, encoded, strict=True):
            # Exactly one [UNK] stands for each character never seen in training.
            known_parts = decode_report(tokenizer, ids).split(tokenizer.unk_token)
            assert re.fullmatch(".".join(map(re.escape, known_parts)), report), report

    han = [char for report in reports["val", "zh"] for char in HAN.findall(report)]
    unseen_han = [char for char in han if char not in vocabulary]
    print(f"zh: {len(unseen_han)} of {len(han)} Han characters unseen: {sorted(set(unseen_han))}")
    assert len(unseen_han) / len(han) < 0.01
    for report in reports["val", "zh"]:
        tokens = tokenizer.tokenize(report)
        known_han = [char for char in HAN.findall(report) if char in vocabulary]
        assert [token for token in tokens if HAN.search(token)] == known_han, report
