"""Language-neutral clean-up of report text, shared by language plugins.

Each function does one mechanical job that reports in any language need (list numbering,
full-width characters, whitespace, doubled punctuation).  What counts as punctuation or a
sentence boundary differs between languages, so those sets are arguments, not constants.
Every function is idempotent: applying it twice gives the same text as applying it once,
and :func:`until_stable` extends that to a language's whole chain of rules.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable

__all__ = [
    "collapse_punctuation_runs",
    "collapse_whitespace",
    "fullwidth_to_ascii",
    "strip_list_markers",
    "until_stable",
]

# Any run of whitespace, line breaks included.
_WHITESPACE = re.compile(r"\s+")

# Full-width ASCII variants (！ … ～, U+FF01–FF5E) and the ideographic space, mapped to ASCII;
# for this block that is exactly what NFKC does, without NFKC's other rewrites (² → 2, ① → 1).
_FULLWIDTH_TO_ASCII = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}

# Passes after which `until_stable` gives up; real reports settle in one or two.
_MAX_PASSES = 8

# A list-item marker and the whitespace around it: "1." "1)" "1、" "(1)" "（１）" with ASCII or
# full-width digits, or a numbered sign such as ① ⑴ ⒈ ❶.  The marker must not continue a word,
# decimal or date ("T11.", "2.5", "3/11.") and must be followed by the item's first letter
# (any script) or by a space and its first letter or digit ("2. 8 mm nodule"), so "2.5 cm"
# and "1, 2 and 3" are left alone.
_LIST_MARKER = re.compile(
    r"(?P<lead>\s*)(?<![A-Za-z0-9０-９./])"
    r"(?:[(（](?P<paren>[0-9０-９]{1,2})[)）]"
    r"|(?P<plain>[0-9０-９]{1,2})[.)．）、]"
    r"|(?P<sign>[\u2460-\u249b\u2776-\u2793]))"
    r"(?:\s+(?=[^\W_])|(?=[^\W\d_]))"
)


def collapse_whitespace(text: str) -> str:
    """Turn every run of whitespace (newlines, tabs, odd Unicode spaces) into one space; strip."""
    return _WHITESPACE.sub(" ", text).strip()


def fullwidth_to_ascii(text: str, keep: str = "") -> str:
    """Map full-width letters, digits and punctuation (and the ideographic space) to ASCII.

    Input methods for CJK languages type "ＣＴ" or "２．５" at will; folding them makes the
    same report compare equal however it was typed.  Characters in `keep` (e.g. "，。")
    stay full-width, for languages that punctuate that way.
    """
    return text.translate(_fullwidth_table(keep))


@functools.cache
def _fullwidth_table(keep: str) -> dict[int, int]:
    return {code: plain for code, plain in _FULLWIDTH_TO_ASCII.items() if chr(code) not in keep}


def strip_list_markers(text: str, *, boundaries: str, terminator: str) -> str:
    """Remove list numbering ("1.", "1、", "(1)", "①") in front of report items.

    A number is treated as a marker when it starts the text, follows one of `boundaries`
    (sentence or clause punctuation), is a numbered sign such as ①, or continues a count
    ("… 2. Foo" right after an accepted "1."; a "1." counts when a "2." follows) — so the
    "4." of "right rib 4. The …" survives.  A marker that sat in the middle of running text
    is replaced by `terminator` to keep the items apart.  Markers uncovered by a removal
    ("1、2、…") are removed too.
    """
    strip_once = functools.partial(
        _strip_list_markers_once, boundaries=boundaries, terminator=terminator
    )
    return until_stable(strip_once, text)


def _strip_list_markers_once(text: str, *, boundaries: str, terminator: str) -> str:
    candidates = list(_LIST_MARKER.finditer(text))
    numbers = [_marker_number(match) for match in candidates]
    pieces: list[str] = []
    position, previous = 0, 0
    for index, match in enumerate(candidates):
        before = text[: match.start()].rstrip()
        at_boundary = not before or before[-1] in boundaries
        number = numbers[index]
        accepted = (
            match["sign"] is not None
            or at_boundary
            or (previous > 0 and number == previous + 1)
            or (number == 1 and 2 in numbers[index + 1 :])
        )
        if not accepted:
            continue
        previous = number
        pieces += [text[position : match.start()], match["lead"] if at_boundary else terminator]
        position = match.end()
    return "".join([*pieces, text[position:]])


def _marker_number(match: re.Match[str]) -> int:
    digits = match["paren"] or match["plain"]
    return int(digits) if digits else int(unicodedata.numeric(match["sign"]))


def collapse_punctuation_runs(text: str, marks: str) -> str:
    """Reduce a run of punctuation marks ("。。", ",.", ". .") to its strongest mark.

    `marks` lists the marks to consider, weakest first (e.g. ``",:;.!?"``): the run keeps the
    mark found latest in that order, so a stray comma before a full stop disappears.
    Whitespace inside a run is dropped; spacing around the kept mark is left to the caller.
    """
    return _punctuation_run(marks).sub(
        lambda run: max((mark for mark in run[0] if mark in marks), key=marks.index), text
    )


@functools.cache
def _punctuation_run(marks: str) -> re.Pattern[str]:
    # Two or more of `marks`, possibly with whitespace between them.
    mark = f"[{re.escape(marks)}]"
    return re.compile(rf"{mark}(?:\s*{mark})+")


def until_stable(clean: Callable[[str], str], text: str) -> str:
    """Apply `clean` until the text stops changing, making any clean-up idempotent.

    One rule can expose work for another (re-spacing "T11.1." uncovers a list marker "1."),
    and ordering the rules cannot rule that out for every input.  Rules that only remove or
    re-space settle within a pass or two; after a fixed number of passes the last text is
    returned, so a rule that never settles cannot hang the caller.
    """
    for _ in range(_MAX_PASSES):
        cleaned = clean(text)
        if cleaned == text:
            break
        text = cleaned
    return text
