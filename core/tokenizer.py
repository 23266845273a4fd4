"""One subword vocabulary for the reports of every language, learnt from the training data.

The text tower is trained from scratch, so its vocabulary is learnt from the training reports
(all languages together, one shared id space) with the `tokenizers` library, and handed to the
rest of the code as a `transformers` fast tokenizer that saves next to a model checkpoint.

Design, and the measurements behind it (COV-CTR, trained on 576 English + 576 Chinese train
reports, scored on the 72 + 72 val reports):

* **BPE, not WordPiece.**  `tokenizers`' WordPiece trainer is not deterministic (issue
  huggingface/tokenizers#1794: "##" pieces get ids in hash-map order, which then breaks ties
  between merges): five trainings on the same reports gave five different vocabularies.
  Its BPE trainer gave the same vocabulary in fifteen trainings over three processes, and
  a checkpoint's vocabulary must be reproducible.  BPE also marks just the one character it
  does not know as ``[UNK]``, where WordPiece loses the whole word.  The special tokens, the
  ``[CLS] … [SEP]`` wrapping and the `transformers` interface are BERT's.
* **Lossless.**  Spaces are kept in the tokens, SentencePiece style ("▁lungs" after a space,
  "lungs" inside a word or after a bracket), so no continuation marker ("##") is needed and
  decoding gives back exactly the normalised text, "2.5cm" and "clear." included.  A
  generator thus writes finished text instead of "clear ." that would need guessing to
  repair (BERT's own clean-up for that also rewrites "do not" into "don't").
* **Case is kept.**  The generator must write "CT", "PA", "COPD" and "COVID-19", which
  cannot be restored once lower-cased.  Lower-casing would save 10 of ~1,030 vocabulary
  entries and 0.2 tokens per English val report (80.2 instead of 80.4); with the IU X-ray
  train reports added, 481 of 3,833 entries and 0.3 tokens per IU val report (42.1 instead
  of 42.4), well within the default budget of 8,000.  Its one other advantage, fewer
  unknown characters (COV-CTR train has only the capitals A, I, L, N, T, so the "M" of
  "Metallic" in val is ``[UNK]``: 0.14 % of English val tokens), is had with case kept by
  giving every printable ASCII character a token (``_ASCII``): English val ``[UNK]`` 0 %.
* **Normaliser: NFC only** (plus BERT's removal of control characters).  The language
  plugins have already normalised the text; NFKC would fold the Chinese full-width
  punctuation "，；" that the Chinese normal form keeps into ASCII (it changes all 576
  Chinese train reports), and decoding would no longer give back the report.
* **Chinese: one token per character.**  Every Han character is split off on its own, as
  BERT's ``handle_chinese_chars`` does, but without inserting spaces that would come back
  on decoding; full-width punctuation is punctuation and is split off too.  Han characters
  absent from training are ``[UNK]`` (0.66 % of Chinese val tokens: 金属伪影 and 板, 相, 一).
* **Digits: one token each**, so "2.5cm" is "2" "." "5" "cm": a measurement is spelt out
  from ten digit tokens instead of taking one vocabulary entry per number seen.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from tokenizers.processors import TemplateProcessing

from m3fm.registry import InputError
from m3fm.safe_loading import check_checkpoint_folder

if TYPE_CHECKING:  # transformers is imported where a tokenizer is made (most of a second)
    from transformers import PreTrainedTokenizerFast

    from m3fm.lean.tokenizer import LeanTokenizer

__all__ = ["SPECIAL_TOKENS", "decode_report", "load_tokenizer", "train_tokenizer"]

SPECIAL_TOKENS = MappingProxyType({
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
    "bos_token": "[BOS]",
    "eos_token": "[EOS]",
})
"""Role → special token, BERT-style, plus [BOS]/[EOS] for the report generator.

They take ids 0-6 in this order, so ``[PAD]`` is 0.  Keys are the keyword names that
`transformers` tokenizers take, so ``PreTrainedTokenizerFast(..., **SPECIAL_TOKENS)`` works.
"""

_SPACE_MARK = "▁"  # U+2581: stands, inside a token, for the space before a word
# Always in the vocabulary, seen in training or not: digits, Latin letters of either case
# and ASCII punctuation occur in reports of every language ("CT", "2.5cm", "COVID-19").
_ASCII = string.digits + string.ascii_letters + string.punctuation


def train_tokenizer(
    texts: Iterable[str], *, vocab_size: int = 8000, min_frequency: int = 2
) -> PreTrainedTokenizerFast:
    """Learn a BPE vocabulary from normalised reports of any languages, mixed.

    `min_frequency` is the count below which a merge is not learnt (characters always are),
    so a small corpus stops short of `vocab_size`.  Training on the same texts gives the
    same vocabulary and ids, which checkpoints rely on.
    """
    from transformers import PreTrainedTokenizerFast

    corpus = [text for text in texts if text.strip()]
    if not corpus:
        raise ValueError("cannot train a tokenizer on no text: every given text is empty")
    backend = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    backend.normalizer = normalizers.Sequence([
        normalizers.NFC(),
        normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=False, strip_accents=False, lowercase=False
        ),
    ])
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement=_SPACE_MARK, prepend_scheme="always"),
        pre_tokenizers.Split(Regex(r"\p{Han}"), behavior="isolated"),
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.Punctuation(behavior="isolated"),
    ])
    backend.decoder = decoders.Metaspace(replacement=_SPACE_MARK, prepend_scheme="always")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=list(_ASCII),
        show_progress=False,
    )
    backend.train_from_iterator(corpus, trainer=trainer)
    cls, sep = SPECIAL_TOKENS["cls_token"], SPECIAL_TOKENS["sep_token"]
    backend.post_processor = TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, backend.token_to_id(cls)), (sep, backend.token_to_id(sep))],
    )
    return PreTrainedTokenizerFast(tokenizer_object=backend, **SPECIAL_TOKENS)


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Load a tokenizer saved with ``save_pretrained`` (or a hub id, when online).

    Code that comes with a tokenizer is never run, and a folder is checked first and read
    without network (see :mod:`m3fm.safe_loading`).  A missing folder raises InputError naming
    it, instead of the hub lookup error that `transformers` gives for a path it does not find.
    """
    from transformers import AutoTokenizer

    local = Path(path).is_dir()
    if local:
        check_checkpoint_folder(Path(path))
    try:
        return AutoTokenizer.from_pretrained(
            str(path), trust_remote_code=False, local_files_only=local
        )
    except (OSError, ValueError) as error:
        raise InputError(
            f"{path}: no tokenizer there (not a folder with tokenizer files, nor a reachable "
            "hub id)"
        ) from error


def decode_report(tokenizer: PreTrainedTokenizerFast | LeanTokenizer, ids: Iterable[int]) -> str:
    """Text of token ids, spaced exactly as it was written; structural tokens are dropped.

    ``[UNK]`` stays visible, so a gap in a generated report is not silently closed.  The
    language plugin's ``join_words``/``normalize`` remains the place for language rules.
    """
    structural = set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}
    kept = [int(token_id) for token_id in ids if int(token_id) not in structural]
    return tokenizer.decode(kept, skip_special_tokens=False, clean_up_tokenization_spaces=False)
