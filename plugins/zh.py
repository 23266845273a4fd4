"""Chinese (`zh`): aligned through English.

Normal form of a Chinese report, and why:

* List numbering ("1.", "1、", "（1）", "①") is removed; an item glued to the previous one
  gets "。" so the items stay apart.
* Full-width letters, digits and symbols become ASCII as NFKC would ("ＣＴ" → "CT",
  "２．５％" → "2.5%"), except the Chinese punctuation ``，；：！？（）``.
* Chinese punctuation is full-width: ASCII ``, ; : ! ? ( )`` become ``，；：！？（）``
  (except "," and ":" between digits, as in "1,000" and "12:30"), and "." becomes "。"
  where it ends a clause (before a Chinese character, a space or the end) but stays in
  "2.5".  Quotes (“”), "、" and other marks are left as written.
* Whitespace is removed, except a single space between two ASCII characters ("2.5 cm"),
  where it separates words.  Chinese is written without spaces, and stray spaces in real
  reports ("边缘模糊， 右肺…", "密度不均 ，") carry no meaning.
* Doubled punctuation collapses ("，，" → "，", "，。" → "。"), and the report ends with
  "。", "！" or "？".

Sentences end at 。！？ but not at ；: in these reports "；" separates clauses of one
finding, exactly where the English parallel report writes ";".  Splitting on "。！？" gives
an English/Chinese pair the same number of sentences in 640 of the 648 COV-CTR pairs;
splitting on "；" as well, in only 440.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import TYPE_CHECKING

from m3fm.registry import LanguageSpec, hookimpl
from m3fm.text import (
    collapse_punctuation_runs,
    fullwidth_to_ascii,
    strip_list_markers,
    until_stable,
)

if TYPE_CHECKING:
    import jieba

# CJK ideographs (the unified block and extension A) and CJK / full-width punctuation.
_CJK = r"\u3400-\u4dbf\u4e00-\u9fff"
_CJK_PUNCTUATION = r"\u3000-\u303f\uff00-\uffef\u2018\u2019\u201c\u201d"

# ASCII marks that become full-width in Chinese text; "," and ":" only when not between digits.
# Their full-width forms are kept as typed, even "1，000": only ASCII input is judged.
_FULLWIDTH_MARKS = "，；：！？（）"
_ASCII_TO_FULLWIDTH = str.maketrans(",;:!?()", _FULLWIDTH_MARKS)
_ASCII_PUNCTUATION = re.compile(r"(?<!\d)[,:]|[,:](?!\d)|[;!?()]")
# Full stops that end a clause: before a Chinese character, a space or the end of the text.
_CLAUSE_FULL_STOP = re.compile(rf"\.+(?=[{_CJK}{_CJK_PUNCTUATION}]|\s|$)")
# Any run of whitespace; only between two ASCII characters does it survive, as one space.
_WHITESPACE = re.compile(r"\s+")
# Where a sentence ends: 。！？ (or ASCII ! ?) and any closing quotes or brackets.
_SENTENCE_END = re.compile(r"[。！？!?][”’）」』)]*")
# A report already closed by a sentence-final mark.
_CLOSED_REPORT = re.compile(rf"{_SENTENCE_END.pattern}$")
# Clause punctuation left dangling at the very end of a report.
_TRAILING_CLAUSE_PUNCTUATION = re.compile(r"[，、；：,;:]+$")

_LIST_BOUNDARIES = "。！？；：，、.!?;:,"
_PUNCTUATION_BY_STRENGTH = "、，：；。！？"


def normalize(report: str) -> str:
    """Clean a raw Chinese report into the normal form described in the module docstring."""
    return until_stable(_normalize_pass, report)


def _normalize_pass(text: str) -> str:
    text = strip_list_markers(text, boundaries=_LIST_BOUNDARIES, terminator="。")
    text = fullwidth_to_ascii(text, keep=_FULLWIDTH_MARKS)
    text = _ASCII_PUNCTUATION.sub(lambda mark: mark[0].translate(_ASCII_TO_FULLWIDTH), text)
    text = _CLAUSE_FULL_STOP.sub("。", text)
    text = _WHITESPACE.sub(_keep_space_between_ascii, text.strip())
    text = collapse_punctuation_runs(text, _PUNCTUATION_BY_STRENGTH)
    if text and not _CLOSED_REPORT.search(text):
        text = _TRAILING_CLAUSE_PUNCTUATION.sub("", text) + "。"
    return text


def _keep_space_between_ascii(gap: re.Match[str]) -> str:
    # Called on stripped text, so a gap always has a character on either side.
    before, after = gap.string[gap.start() - 1], gap.string[gap.end()]
    return " " if before.isascii() and after.isascii() else ""


def split_sentences(text: str) -> list[str]:
    """Split after 。！？ (closing quotes stay with their sentence); "；" does not end one."""
    sentences, start = [], 0
    for end in _SENTENCE_END.finditer(text):
        sentences.append(text[start : end.end()])
        start = end.end()
    sentences.append(text[start:])
    return [sentence.strip() for sentence in sentences if sentence.strip()]


@functools.cache
def _segmenter() -> jieba.Tokenizer:
    """A private jieba tokenizer, built on first use (loading its dictionary takes ~1 s)."""
    import jieba

    jieba.setLogLevel(logging.WARNING)  # jieba announces every dictionary load on stderr
    segmenter = jieba.Tokenizer()
    for name in FINDING_NAMES.values():  # a finding is one word, not "磨 / 玻璃 / 影"
        segmenter.add_word(name)
    return segmenter


def tokenize_words(text: str) -> list[str]:
    """Words by jieba; an ASCII run jieba cuts apart ("COVID-19", "2.5cm") stays one word.

    Spaces are not words.  Two adjacent words that both touch ASCII were separated by a
    space in the text, which is what lets :func:`join_words` restore it.
    """
    words: list[str] = []
    after_space = False
    for piece in _segmenter().lcut(text):
        if piece.isspace():
            after_space = True
            continue
        if words and not after_space and _touch_as_ascii(words[-1], piece):
            words[-1] += piece
        else:
            words.append(piece)
        after_space = False
    return words


def join_words(words: list[str]) -> str:
    """Concatenate words, with a space only between two that touch as ASCII ("2.5 cm")."""
    parts: list[str] = []
    for word in filter(None, words):
        if parts and _touch_as_ascii(parts[-1], word):
            parts.append(" ")
        parts.append(word)
    return "".join(parts)


def _touch_as_ascii(left: str, right: str) -> bool:
    return left[-1].isascii() and right[0].isascii()


FINDING_NAMES = {
    "atelectasis": "肺不张",
    "cardiomegaly": "心影增大",
    "effusion": "胸腔积液",
    "infiltration": "浸润影",
    "mass": "肿块影",
    "nodule": "结节影",
    "pneumonia": "肺炎",
    "pneumothorax": "气胸",
    "consolidation": "实变影",
    "edema": "肺水肿",
    "emphysema": "肺气肿",
    "fibrosis": "肺纤维化",
    "pleural_thickening": "胸膜增厚",
    # The "Hernia" class of chest radiograph label sets is, in practice, hiatal hernia.
    "hernia": "食管裂孔疝",
    "covid19": "新型冠状病毒肺炎",
    "ground_glass_opacity": "磨玻璃影",
    "lymphadenopathy": "纵隔淋巴结肿大",
}
"""Label id → the term Chinese radiology reports use ("…影" for CT signs, as in COV-CTR)."""

# Chinese reports state findings as "（可）见…" and impressions as "考虑…" / "符合…表现";
# absence as "未见（明显）…".
POSITIVE_TEMPLATES = (
    "可见{finding}。",
    "考虑{finding}。",
    "符合{finding}表现。",
)
NEGATIVE_TEMPLATES = (
    "未见{finding}。",
    "未见明显{finding}。",
    "不考虑{finding}。",
)

SPEC = LanguageSpec(
    code="zh",
    name="Chinese",
    pivot="en",
    normalize=normalize,
    split_sentences=split_sentences,
    tokenize_words=tokenize_words,
    join_words=join_words,
    metric_tokenizer="zh",
    finding_names=FINDING_NAMES,
    positive_templates=POSITIVE_TEMPLATES,
    negative_templates=NEGATIVE_TEMPLATES,
)


@hookimpl
def m3fm_languages() -> list[LanguageSpec]:
    """The Chinese language."""
    return [SPEC]
