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
from importlib.resources import files
from typing import TYPE_CHECKING

from m3fm.findings import FindingRules, Location, Negation
from m3fm.registry import Finding, LabelPrompts, LanguageSpec, hookimpl
from m3fm.sentence_pairs import read_sentence_pairs
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
    "patchy_opacity": "斑片影",
    "reticulation": "网格影",
    "linear_opacity": "条索影",
    "air_bronchogram": "支气管充气征",
    "cavity": "空洞",
    "bronchiectasis": "支气管扩张",
    "calcification": "钙化灶",
    "crazy_paving": "铺路石征",
    "subpleural_line": "胸膜下线",
    "tree_in_bud": "树芽征",
    "vascular_enlargement": "血管增粗",
    "pericardial_effusion": "心包积液",
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

# COVID-19 by its imaging signs, parallel to the English prompts (the reports never name it).
LABEL_PROMPTS = {
    "covid19": LabelPrompts(
        positive=(
            "双肺下野弥漫性浸润影。",
            "双肺外周磨玻璃影，符合新型冠状病毒肺炎。",
            "双肺多发斑片状磨玻璃影，边缘模糊。",
        ),
        negative=(
            "双肺内未见异常密度影。",
            "大叶性实变，考虑细菌性肺炎。",
            "气管插管及中心静脉置管在位；重度急性呼吸窘迫综合征。",
        ),
    ),
}

# Finding extraction.  Terms per label id, matched in normalised text; they cover the CT
# wording of COV-CTR reports and common synonyms.  Modifiers that belong to a finding are part
# of its term, so that "斑片" in "斑片状磨玻璃影" is not also read as a patchy opacity.
_SHAPE = r"(?:(?:斑片|[小大淡]?片|条|晕|弧形|局限性|多发|弥漫|散在)状?)*"
_FINDING_TERMS = {
    "ground_glass_opacity": rf"{_SHAPE}(?:磨玻璃|毛玻璃|玻璃)(?:样|密度)*影?|GGO",
    "consolidation": rf"{_SHAPE}实变(?:密度)?影?",
    "patchy_opacity": (
        r"(?:斑片|[小大淡条]?片|片索)状?(?:致密|高密度)?影|斑片|[小大淡条]?片状?(?=[及、和])"
    ),
    "reticulation": r"网格|网状|小叶间隔增厚|间质性?改变",
    "linear_opacity": r"条索|索条|纤维条|条状(?:致密|高密度)?影|条影|线[状样]影",
    "nodule": r"结节|肉芽肿",
    "mass": r"肿块|占位",
    "lymphadenopathy": r"肿大(?:的)?淋巴结|淋巴结(?:影)?(?:肿大|增大)",
    "effusion": r"积液|胸水|胸腔内?见?[^，。；]{0,6}?(?:液性|低)密度影",
    "pericardial_effusion": r"心包积液|心包腔?内?见?[^，。；]{0,8}?(?:液性|低)密度影",
    "pneumothorax": r"气胸|胸腔内?见?[^，。；]{0,6}?气体密度影",
    "pleural_thickening": r"胸[膜模][^，。；]{0,6}?增厚",
    "atelectasis": r"肺不张|膨胀不全|受压",
    "air_bronchogram": r"支气管(?:充)?气(?:像|象|征)|空气支气管征|充气支气管",
    "cavity": r"空洞",
    "bronchiectasis": r"支气管扩张|支气管[^，。；]{0,10}?(?:管径|管腔)[^，。；]{0,6}?(?:增宽|扩张)",
    "calcification": r"钙化",
    "crazy_paving": r"铺路石|碎石路",
    "subpleural_line": r"胸膜下线",
    "tree_in_bud": r"树芽",
    "vascular_enlargement": r"血管(?:影)?增粗|增粗的?血管",
    "emphysema": r"肺气肿|肺大[泡疱]",
    "fibrosis": r"纤维化|蜂窝",
    "edema": r"水肿",
    "pneumonia": r"肺炎",
    "infiltration": r"浸润",
    "hernia": r"裂孔疝|膈疝",
    "cardiomegaly": r"心影(?:增大|扩大)|心脏(?:稍|略|明显)?(?:增大|扩大)|心脏(?:稍|略)大",
}
# Phrases that state a finding is absent by themselves, with no negation cue to find.
_ABSENT_FINDING_TERMS = {
    "cardiomegaly": r"心(?:脏|影)(?:不大|大小正常|大小形态正常|未见增大)",
}
# Cues that negate what follows them in a clause: "未见", "未见明显", "无", "没有".
_NEGATION_BEFORE = re.compile(r"未|无|没有|否认")
# Cues that negate what precedes them: "…已吸收", "…消失" (resolved).
_NEGATION_AFTER = re.compile(r"(?:已|完全)吸收|消失")
# Look like negation cues but deny no finding: "不除外" (cannot be excluded), "无变化".
_PSEUDO_NEGATION = re.compile(r"[不未]除外|[不未]排除|无法排除|无(?:明显)?变化")
# Words after which a negation no longer reaches within one clause ("未见积液但见实变").
_NEGATION_TERMINATORS = re.compile(r"但是?|然而|而")
# Clause boundaries within a sentence ("、" separates list items, not clauses).
_CLAUSE_BREAK = re.compile(r"[，；：,;:]")

# Places: a side ("右肺", "双侧", "两肺", with "尖" the apex of the upper lobe), lobes ("上叶",
# "上、中叶", "上叶及下叶"; a lobe after a side belongs to it), the lingula ("舌段", part
# of the left upper lobe), and the mediastinum (a place with no side).
_PLACE = re.compile(
    r"(?P<side>[左右双两])(?:肺|侧)(?P<apex>尖)?"
    r"|(?P<lobes>[上中下](?:[、及和][上中下])*)叶"
    r"|(?P<lingula>舌段)"
    r"|(?P<mediastinum>纵隔)"
)
_SIDES = {"左": "left", "右": "right", "双": "both", "两": "both"}
_LOBES = {"上": "upper", "中": "middle", "下": "lower"}


def _locate(clause: str) -> list[Location]:
    """Sides and lobes a clause names, in text order (纵隔: a place without either)."""
    places: list[Location] = []
    side, side_alone = None, False
    for match in _PLACE.finditer(clause):
        if match["side"]:
            if side_alone:
                places.append((side, None))
            side, side_alone = _SIDES[match["side"]], not match["apex"]
            if match["apex"]:
                places.append((side, "upper"))
        elif match["lobes"]:
            places += [(side, _LOBES[lobe]) for lobe in match["lobes"] if lobe in _LOBES]
            side_alone = False
        elif match["lingula"]:
            places.append(("left", "upper"))
            side_alone = False
        else:
            places.append((None, None))
    if side_alone:
        places.append((side, None))
    return list(dict.fromkeys(places))


def _split_clauses(sentence: str) -> list[str]:
    """Split at "，；："; lists of places or findings are joined by "、" and "及" instead."""
    return [clause for clause in _CLAUSE_BREAK.split(sentence) if clause]


_FINDING_RULES = FindingRules(
    terms=_FINDING_TERMS,
    absent_terms=_ABSENT_FINDING_TERMS,
    negation=Negation(
        before=_NEGATION_BEFORE,
        after=_NEGATION_AFTER,
        pseudo=_PSEUDO_NEGATION,
        terminators=_NEGATION_TERMINATORS,
    ),
    split_sentences=split_sentences,
    split_clauses=_split_clauses,
    locate=_locate,
)


def extract_findings(report: str) -> list[Finding]:
    """Findings a Chinese radiology report states or negates, with side and lobe."""
    return _FINDING_RULES(normalize(report))


# Written for the conformance kit in the style of COV-CTR's Chinese CT reports and of Chinese
# chest radiograph reports; not taken from any data set.
SAMPLE_REPORTS = (
    "胸廓对称，纵隔居中，气管通畅。双肺下叶见多发斑片状磨玻璃密度影，边缘模糊。纵隔内未见肿大淋巴结。",
    "1.两肺纹理清晰，未见明确实变影。2.心影大小、形态正常。双侧胸腔未见积液.",
    "心影增大，右下肺野见片状高密度影（考虑肺炎），请结合临床。",
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
    label_prompts=LABEL_PROMPTS,
    extract_findings=extract_findings,
    sample_reports=SAMPLE_REPORTS,
    # COV-CTR's parallel reports are all CT; these hand-written chest X-ray pairs carry the
    # radiograph wording (opacity, infiltrate, consolidation) across the pivot.
    parallel_sentences=read_sentence_pairs(files(__package__) / "data" / "zh-cxr-sentences.tsv"),
)


@hookimpl
def m3fm_languages() -> list[LanguageSpec]:
    """The Chinese language."""
    return [SPEC]
