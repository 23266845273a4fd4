"""Language-overlap scores of generated reports: BLEU-1..4, ROUGE-L and CIDEr-D, per language.

Every score counts the same tokens.  Both texts are first put into the language's normal form
(:attr:`LanguageSpec.normalize`), then split by the language's sacrebleu tokenizer
(:attr:`LanguageSpec.metric_tokenizer`): ``13a`` words and punctuation for English, one token
per character for Chinese (sacrebleu's ``zh``), so that a Chinese score does not depend on how
a word segmenter happened to cut the text.

* ``BLEU-n`` is sacrebleu's cumulative corpus BLEU up to n-grams (``max_ngram_order=n``),
  case-sensitive, on a 0–100 scale.  It is not smoothed and uses every order (no effective
  order): over a whole corpus each order almost always has matches, and when one has none the
  honest corpus score is 0 — smoothing exists for sentence-level BLEU.
* ``ROUGE-L`` is pycocoevalcap's: the LCS F-measure with beta 1.2 per case, averaged over
  cases, here multiplied by 100 to share BLEU's scale.
* ``CIDEr-D`` is pycocoevalcap's ``Cider``, which despite its name implements CIDEr-D
  (clipped n-gram counts, Gaussian length penalty with sigma 6, mean over 1..4-grams, times
  10), reported as is (0 to about 10).  Its n-gram weights are inverse document frequencies
  over the scored corpus's references, so it needs several cases: on one case every weight
  is 0, and phrases shared by every reference (a report template) earn nothing.

pycocoevalcap is given texts already tokenised as above, so its Java PTB tokenizer is never
used.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from sacrebleu.metrics import BLEU

from m3fm.metrics import check_pairs
from m3fm.registry import LanguageSpec

BLEU_ORDERS = (1, 2, 3, 4)
METRIC_NAMES = (*(f"BLEU-{order}" for order in BLEU_ORDERS), "ROUGE-L", "CIDEr-D")
"""Keys of every score dictionary, in the order tables show them."""


def report_scores(
    hypotheses: Sequence[str], references: Sequence[str], language: LanguageSpec
) -> dict[str, float]:
    """Score generated reports against one reference each, keyed by :data:`METRIC_NAMES`.

    Raises ValueError when the two lengths differ, when there is nothing to score, or when a
    reference is empty after normalisation (no score is defined against an empty report).
    An empty hypothesis is allowed: a model may generate nothing, and that scores 0.
    """
    check_pairs(hypotheses, references)
    hypotheses = [language.normalize(text) for text in hypotheses]
    references = [language.normalize(text) for text in references]
    empty = [index for index, text in enumerate(references) if not text.strip()]
    if empty:
        raise ValueError(
            f"{len(empty)} reference(s) are empty after normalisation, first at index {empty[0]}"
        )

    scores = {
        f"BLEU-{order}": _corpus_bleu(hypotheses, references, language.metric_tokenizer, order)
        for order in BLEU_ORDERS
    }
    tokenize = BLEU(tokenize=language.metric_tokenizer).tokenizer
    # pycocoevalcap takes {case id: [space-separated tokens]} and splits on single spaces.
    generated = {index: [tokenize(text)] for index, text in enumerate(hypotheses)}
    expected = {index: [tokenize(text)] for index, text in enumerate(references)}
    rouge_l, _ = Rouge().compute_score(expected, generated)
    cider_d, _ = Cider().compute_score(expected, generated)
    scores["ROUGE-L"] = 100 * float(rouge_l)
    scores["CIDEr-D"] = float(cider_d)
    return scores


def _corpus_bleu(
    hypotheses: list[str], references: list[str], tokenizer: str, max_order: int
) -> float:
    bleu = BLEU(tokenize=tokenizer, smooth_method="none", max_ngram_order=max_order)
    return bleu.corpus_score(hypotheses, [references]).score


def most_frequent_report(train_reports: Sequence[str], language: LanguageSpec) -> str:
    """The training report written most often, in normal form; ties go to the one seen first.

    Normalising first counts reports that differ only in spacing or punctuation as one.
    """
    if not train_reports:
        raise ValueError("no training reports to choose the most frequent one from")
    counts = Counter(language.normalize(text) for text in train_reports)
    report, _ = counts.most_common(1)[0]  # Counter keeps first-seen order among equal counts
    return report


def most_frequent_report_baseline(
    train_reports: Sequence[str], val_reports: Sequence[str], language: LanguageSpec
) -> dict[str, float]:
    """Scores of answering every case with the most frequent training report.

    On templated report corpora this image-blind baseline scores high on overlap metrics, so a
    model's overlap scores mean something only next to it.
    """
    baseline = most_frequent_report(train_reports, language)
    return report_scores([baseline] * len(val_reports), val_reports, language)
