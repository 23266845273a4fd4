"""The Chinese language plugin: normal form, sentences, jieba words, prompts and metric."""

from __future__ import annotations

import functools
import json
import random
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import sacrebleu

from m3fm.registry import UnknownNameError, get_registry

# Raw text with the noise of real reports, and its normal form.
NORMAL_FORMS = [
    ("胸廓对称，纵隔心影居中。\n", "胸廓对称，纵隔心影居中。"),
    ("双肺上叶可见斑片状磨玻璃影， 边缘模糊", "双肺上叶可见斑片状磨玻璃影，边缘模糊。"),
    ("密度不均 ，叶段支气管通畅。", "密度不均，叶段支气管通畅。"),
    ("未见肿大淋巴结,双侧胸腔内未见异常密度影.", "未见肿大淋巴结，双侧胸腔内未见异常密度影。"),
    ("结果:阴性;复查?", "结果：阴性；复查？"),
    ("肿大淋巴结影，，叶段支气管通畅。。", "肿大淋巴结影，叶段支气管通畅。"),
    ("边缘模糊，。", "边缘模糊。"),
    ("边缘模糊；", "边缘模糊。"),
    ("胸 部 ＣＴ 示 病灶 大小约２．５ｃｍ", "胸部CT示病灶大小约2.5cm。"),
    ("约2.5 cm x 1.5 cm，约1,000个，12:30复查", "约2.5 cm x 1.5 cm，约1,000个，12:30复查。"),
    ("新型冠状病毒 (COVID-19) 肺炎", "新型冠状病毒（COVID-19）肺炎。"),
    ("CT 扫描示双肺纹理增强", "CT扫描示双肺纹理增强。"),
    ("可见“铺路石征”。", "可见“铺路石征”。"),
    # list numbering
    ("1、双肺感染；2、心影增大。", "双肺感染；心影增大。"),
    ("1.双肺纹理增强。2.未见胸腔积液。", "双肺纹理增强。未见胸腔积液。"),
    ("（1）胸廓对称；（2）双肺纹理增强。", "胸廓对称；双肺纹理增强。"),
    ("①左肺上叶见结节影②右肺未见异常", "左肺上叶见结节影。右肺未见异常。"),
    ("1、双肺感染 2、心影增大", "双肺感染。心影增大。"),
    ("", ""),
]

TRICKY = [raw for raw, _ in NORMAL_FORMS] + [
    "1、2、双肺纹理增强",
    "12:30 ， 2.5 扫描",
    "1..",
    "① .对称ＣＴ CT；1..",
    "e.g. 扫描 (2) ( 1 ) ”",
    "，。；：！？",
    "COVID-19,RT-PCR阳性",
]


@pytest.fixture
def chinese():
    return get_registry().language("zh")


@functools.cache
def _cov_ctr_reports(root: Path) -> dict[str, dict[str, str]]:
    """Report text by image, then by language ("english" / "chinese")."""
    annotation = json.loads((root / "cov-ctr" / "annotation.json").read_text("utf-8"))
    reports: dict[str, dict[str, str]] = defaultdict(dict)
    for entry in (entry for split in annotation.values() for entry in split):
        reports[entry["image_path"]][entry["label1"]] = entry["report"]
    return reports


def _chinese_reports(root: Path) -> list[str]:
    return [pair["chinese"] for pair in _cov_ctr_reports(root).values()]


def test_chinese_pivots_through_english_in_the_registry(chinese):
    assert (chinese.code, chinese.name, chinese.pivot) == ("zh", "Chinese", "en")
    assert get_registry().language(chinese.pivot).pivot is None
    assert chinese.metric_tokenizer == "zh"


@pytest.mark.parametrize(("raw", "expected"), NORMAL_FORMS)
def test_normalize_gives_the_documented_normal_form(chinese, raw, expected):
    assert chinese.normalize(raw) == expected


@pytest.mark.parametrize("raw", TRICKY)
def test_normalize_is_idempotent_and_round_trips_on_tricky_strings(chinese, raw):
    normal = chinese.normalize(raw)
    assert chinese.normalize(normal) == normal
    assert chinese.join_words(chinese.tokenize_words(normal)) == normal


def test_normalize_is_idempotent_on_random_junk(chinese):
    pieces = [
        "1.", "2、", "（1）", "①", "(2)", " ", "\n", "胸廓", "对称", "，", ",", "。", ".", "；",
        ";", "：", ":", "？", "?", "CT", "扫描", "2.5", "cm", "１２", "ＣＴ", "“", "”", "（",
        "）", "(", ")", "COVID-19", "磨玻璃影", "、", "12:30", "1,000", "e.g.", "-", "%",
    ]
    rng = random.Random(0)
    for _ in range(1000):
        raw = "".join(rng.choice(pieces) + rng.choice(["", " "]) for _ in range(rng.randint(1, 20)))
        normal = chinese.normalize(raw)
        assert chinese.normalize(normal) == normal, raw
        assert chinese.join_words(chinese.tokenize_words(normal)) == normal, raw


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("胸廓对称。双肺纹理增强！是否复查？", ["胸廓对称。", "双肺纹理增强！", "是否复查？"]),
        # "；" separates clauses of one finding, as ";" does in the English report
        ("见磨玻璃影，边缘模糊；叶段支气管通畅。", ["见磨玻璃影，边缘模糊；叶段支气管通畅。"]),
        ("病灶大小约2.5cm。边缘清楚", ["病灶大小约2.5cm。", "边缘清楚"]),
        ("可见“铺路石征。”其余未见异常。", ["可见“铺路石征。”", "其余未见异常。"]),
        ("", []),
    ],
)
def test_split_sentences(chinese, text, sentences):
    assert chinese.split_sentences(text) == sentences


def test_words_come_from_jieba_and_ascii_runs_stay_whole(chinese):
    assert chinese.tokenize_words("胸部CT显示右肺下叶磨玻璃影，大小约2.5cm。") == [
        "胸部", "CT", "显示", "右肺", "下叶", "磨玻璃影", "，", "大小", "约", "2.5cm", "。",
    ]
    assert chinese.tokenize_words("COVID-19肺炎") == ["COVID-19", "肺炎"]


@pytest.mark.parametrize(
    "text", ["CT扫描", "约2.5 cm x 1.5 cm。", "新型冠状病毒（COVID-19）肺炎。", "Port-A-Cath导管"]
)
def test_join_words_restores_spaces_between_ascii_words(chinese, text):
    assert chinese.join_words(chinese.tokenize_words(text)) == text


def test_importing_the_plugin_stays_cheap_and_jieba_stays_quiet():
    # A fresh interpreter: jieba loads on first use only, and says nothing when it does.
    script = (
        "import sys; from m3fm.plugins import zh; assert 'jieba' not in sys.modules;"
        " print('|'.join(zh.tokenize_words('胸廓对称')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "胸廓|对称"
    assert result.stderr == ""


def test_prompts_fill_every_template(chinese):
    positive, negative = chinese.prompts("effusion")
    assert "可见胸腔积液。" in positive and "未见胸腔积液。" in negative
    assert len(positive) == len(chinese.positive_templates) >= 3
    assert all("胸腔积液" in prompt and "{" not in prompt for prompt in positive + negative)


def test_unknown_label_lists_the_known_ones(chinese):
    with pytest.raises(UnknownNameError) as error:
        chinese.prompts("fracture")
    assert "fracture" in str(error.value) and "pneumothorax" in str(error.value)


def test_findings_are_named_for_the_same_labels_as_in_english(chinese):
    english = get_registry().language("en")
    assert set(chinese.finding_names) == set(english.finding_names)
    assert chinese.finding_names["covid19"] == "新型冠状病毒肺炎"
    assert chinese.finding_names["pleural_thickening"] == "胸膜增厚"


def test_sacrebleu_accepts_the_metric_tokenizer(chinese):
    reference = chinese.normalize("胸廓对称，双肺纹理增强，未见胸腔积液。")
    perfect = sacrebleu.corpus_bleu([reference], [[reference]], tokenize=chinese.metric_tokenizer)
    partial = sacrebleu.corpus_bleu(
        ["胸廓对称，双肺纹理清晰。"], [[reference]], tokenize=chinese.metric_tokenizer
    )
    assert perfect.score == pytest.approx(100.0)
    assert 0 < partial.score < 100


@pytest.mark.data
def test_normalize_is_idempotent_on_real_reports(chinese, data_root):
    for report in _chinese_reports(data_root):
        normal = chinese.normalize(report)
        assert chinese.normalize(normal) == normal, report
        assert " " not in normal and "," not in normal and normal.endswith("。"), report


@pytest.mark.data
def test_words_round_trip_on_real_normalised_reports(chinese, data_root):
    for report in _chinese_reports(data_root):
        normal = chinese.normalize(report)
        assert chinese.join_words(chinese.tokenize_words(normal)) == normal, report


@pytest.mark.data
def test_parallel_reports_mostly_have_as_many_sentences(chinese, data_root):
    # Why "；" does not end a sentence: the English translation keeps ";" inside a sentence.
    english = get_registry().language("en")
    pairs = list(_cov_ctr_reports(data_root).values())
    same = sum(
        len(english.split_sentences(english.normalize(pair["english"])))
        == len(chinese.split_sentences(chinese.normalize(pair["chinese"])))
        for pair in pairs
    )
    assert same / len(pairs) > 0.95
