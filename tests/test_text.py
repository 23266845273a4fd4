"""The language-neutral text utilities that language plugins share (m3fm.text)."""

from __future__ import annotations

import pytest

from m3fm.text import (
    collapse_punctuation_runs,
    collapse_whitespace,
    fullwidth_to_ascii,
    strip_list_markers,
    until_stable,
)

ENGLISH = {"boundaries": ".!?:;", "terminator": ". "}
CHINESE = {"boundaries": "。！？；：，、.!?;:,", "terminator": "。"}


def test_collapse_whitespace_folds_every_kind_of_space():
    assert collapse_whitespace("  No effusion.\n\tHeart\u00a0 normal. \r\n") == (
        "No effusion. Heart normal."
    )


def test_fullwidth_to_ascii_folds_letters_digits_and_punctuation():
    assert fullwidth_to_ascii("ＣＴ示２．５ｃｍ，（１）\u3000Ａ") == "CT示2.5cm,(1) A"


def test_fullwidth_to_ascii_keeps_what_it_is_told_to():
    assert fullwidth_to_ascii("ＣＴ示２．５ｃｍ，（１）", keep="，（）") == "CT示2.5cm，（1）"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1. No effusion. 2. Normal heart.", "No effusion. Normal heart."),
        ("1) No effusion. 2) Normal heart.", "No effusion. Normal heart."),
        ("(1) No effusion. (2) Normal heart.", "No effusion. Normal heart."),
        ("Impression: 1. No acute disease.", "Impression: No acute disease."),
        # items glued to running text are kept apart by the terminator
        ("1. Cardiomegaly 2. Indistinct vessels", "Cardiomegaly. Indistinct vessels"),
        ("Hand 1. Displaced fracture. 2. Lucency.", "Hand. Displaced fracture. Lucency."),
        ("1. No acute process. 2. 8 mm nodule.", "No acute process. 8 mm nodule."),
        # numbers that are not list markers
        ("A fracture is present on right rib 4. The fluid is deep.",
         "A fracture is present on right rib 4. The fluid is deep."),
        ("Nodule of 2.5 cm at T11. Stable.", "Nodule of 2.5 cm at T11. Stable."),
        ("Ribs 1, 2 and 3 are intact.", "Ribs 1, 2 and 3 are intact."),
    ],
)
def test_strip_list_markers_english(text, expected):
    assert strip_list_markers(text, **ENGLISH) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1、胸廓对称；2、双肺纹理增强。", "胸廓对称；双肺纹理增强。"),
        ("1.胸廓对称。2.双肺纹理增强。", "胸廓对称。双肺纹理增强。"),
        ("（1）胸廓对称；（２）双肺纹理增强。", "胸廓对称；双肺纹理增强。"),
        ("①左肺见结节影②右肺未见异常", "左肺见结节影。右肺未见异常"),
        ("⑴左肺见结节影；⑵右肺未见异常", "左肺见结节影；右肺未见异常"),
        ("1、2、双肺纹理增强。", "双肺纹理增强。"),  # a removal that uncovers another marker
        ("结节大小约1.5cm，见2处。", "结节大小约1.5cm，见2处。"),
    ],
)
def test_strip_list_markers_chinese(text, expected):
    assert strip_list_markers(text, **CHINESE) == expected


@pytest.mark.parametrize(
    ("text", "marks", "expected"),
    [
        ("No effusion..", ",:;.!?", "No effusion."),
        ("No effusion. .", ",:;.!?", "No effusion."),
        ("No effusion, .", ",:;.!?", "No effusion."),
        ("Stable?.", ",:;.!?", "Stable?"),
        ("Measures 2.5 cm.", ",:;.!?", "Measures 2.5 cm."),
        ("边缘模糊，，叶段支气管通畅。。", "、，：；。！？", "边缘模糊，叶段支气管通畅。"),
        ("边缘模糊，。", "、，：；。！？", "边缘模糊。"),
    ],
)
def test_collapse_punctuation_runs_keeps_the_strongest_mark(text, marks, expected):
    assert collapse_punctuation_runs(text, marks) == expected


def test_until_stable_repeats_a_rule_until_nothing_changes():
    def drop_one_pair(text: str) -> str:
        return text.replace("()", "", 1)

    assert until_stable(drop_one_pair, "a((()))b") == "ab"
    assert until_stable(str.strip, "  a ") == "a"


def test_until_stable_gives_up_on_a_rule_that_never_settles():
    assert until_stable(lambda text: text + "!", "a").startswith("a!")
