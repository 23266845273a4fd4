"""Keeping a generated report from saying the same clause again.

A small generator decoding greedily (or with beams) can fall into a loop and write "the
texture of both lungs was enhanced" nine times; blocking every repeated n-gram stops that but
garbles the text, since reports legitimately repeat short phrases ("of the", "两肺").  The
unit that must not repeat is the clause, so that is what is controlled here:

* :func:`drop_repeated_clauses` removes, after decoding, each clause or sentence that repeats
  an earlier one (``DecodeConfig.repeated_clauses = "drop"``, the default);
* :class:`RepeatedClauseBlocker` keeps the decoder from finishing a clause it has already
  written (``"block"``), so that a beam does not spend its length on a loop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from m3fm.registry import LanguageSpec, get_registry

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

    from m3fm.lean.tokenizer import LeanTokenizer

CLAUSE_SEPARATORS = ",;，；、"
"""Marks between the clauses of a sentence, in English and Chinese."""

SENTENCE_ENDS = ".!?。！？"
"""Marks that end a sentence."""

# A comma between digits ("1,000") separates no clauses.
_SEPARATOR = re.compile(r"\s*(?:[;，；、]|,(?!\d))\s*")
_SENTENCE_END = re.compile(r"[.!?。！？][\"'”’）」』)]*$")


def drop_repeated_clauses(text: str, language: str | LanguageSpec) -> str:
    """`text` without each clause or sentence that repeats an earlier one.

    Sentences are the language plugin's (``split_sentences``); clauses are the parts of a
    sentence between ``, ; ， ； 、``.  Two clauses are the same when their text is, after
    stripping and lower-casing.  What is kept stays in order; where clauses were dropped
    between two kept ones, the strongest separator among those they stood between is kept
    (``;`` over ``,`` over ``、``), each sentence keeps its own end mark, a sentence that
    loses its first clause starts with a capital again when it had one, and a sentence with
    nothing left goes::

        "A, b, a, c."                      -> "A, b, c."
        "两肺纹理增强，两肺纹理增强，未见异常。"  -> "两肺纹理增强，未见异常。"

    A report without repeats comes back unchanged.
    """
    spec = get_registry().language(language) if isinstance(language, str) else language
    seen: set[str] = set()
    kept: list[str] = []
    position = 0
    for sentence in spec.split_sentences(text):
        start = text.find(sentence, position)
        gap = text[position:start] if start >= 0 else " "
        position = start + len(sentence) if start >= 0 else position
        rebuilt = _without_seen_clauses(sentence, seen)
        if rebuilt:
            kept.append((gap if kept else "") + rebuilt)
    return "".join(kept) if kept or not text.strip() else text


def _strength(separator: str) -> int:
    """How strongly a separator divides: 、 joins list items, a comma clauses, ; more."""
    mark = separator.strip()
    return 0 if mark == "、" else 2 if mark in ";；" else 1


def _without_seen_clauses(sentence: str, seen: set[str]) -> str:
    """The clauses of `sentence` not in `seen` (which gains them), rejoined; '' if none."""
    end = _SENTENCE_END.search(sentence)
    body, mark = (sentence[:end.start()], end.group()) if end else (sentence, "")
    parts = _SEPARATOR.split(body)
    separators = [match.group() for match in _SEPARATOR.finditer(body)]
    pieces: list[str] = []
    gap: list[str] = []  # separators since the last kept clause
    for index, clause in enumerate(parts):
        if index:
            gap.append(separators[index - 1])
        key = clause.strip().lower()
        if key and key in seen:
            continue
        seen.add(key)
        if pieces:
            pieces.append(max(gap, key=_strength))
        pieces.append(clause)
        gap = []
    if not "".join(pieces).strip():
        return ""
    rebuilt = "".join(pieces).strip()
    if sentence[:1].isupper() and rebuilt[:1].islower():
        rebuilt = rebuilt[0].upper() + rebuilt[1:]
    return rebuilt + mark


@dataclass(frozen=True)
class ClauseTokens:
    """How a tokenizer's ids split a report into clauses."""

    boundaries: frozenset[int]
    """Ids whose text holds a clause separator or a sentence end: they close a clause."""
    ignored: frozenset[int]
    """Ids that are no part of a clause's text: structural tokens and bare spaces."""


def clause_boundary_ids(tokenizer: PreTrainedTokenizerFast | LeanTokenizer) -> ClauseTokens:
    """The :class:`ClauseTokens` of `tokenizer`'s vocabulary."""
    marks = set(CLAUSE_SEPARATORS + SENTENCE_ENDS)
    special = set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}
    boundaries, ignored = set(), set(special)
    for token_id in range(len(tokenizer)):
        if token_id in special:
            continue
        text = tokenizer.decode([token_id], clean_up_tokenization_spaces=False)
        if marks & set(text):
            boundaries.add(token_id)
        elif not text.strip():
            ignored.add(token_id)
    return ClauseTokens(frozenset(boundaries), frozenset(ignored))


class RepeatedClauseBlocker:
    """Bans the token that would finish, again, a clause already written in the same report.

    When the clause being written (its tokens since the last boundary) equals an earlier
    clause without that clause's last token, that last token gets a score of -inf.  Only whole
    clauses are compared, so short phrases that reports repeat ("of the") stay allowed, unlike
    n-gram blocking.  The model may still write a longer clause that starts the same way.
    Clauses are compared token for token, so "A" and "a" differ (the text-level
    :func:`drop_repeated_clauses`, which runs after it, compares them case aside).
    Called as both decoders call a logits processor: ``(ids so far, scores) -> scores``.
    """

    def __init__(self, tokens: ClauseTokens) -> None:
        self.tokens = tokens

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for row, ids in enumerate(input_ids.tolist()):
            banned = self.banned(ids)
            if banned:
                scores[row, sorted(banned)] = -float("inf")
        return scores

    def banned(self, ids: list[int]) -> set[int]:
        """Tokens that would make the clause being written in `ids` repeat an earlier one."""
        clauses: list[tuple[int, ...]] = []
        current: list[int] = []
        for token in ids:
            if token in self.tokens.boundaries:
                if current:
                    clauses.append(tuple(current))
                current = []
            elif token not in self.tokens.ignored:
                current.append(token)
        size = len(current)
        return {clause[-1] for clause in clauses
                if len(clause) == size + 1 and list(clause[:size]) == current}
