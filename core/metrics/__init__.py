"""Evaluation metrics for generated reports: language overlap scores and clinical efficacy.

Overlap scores (BLEU, ROUGE-L, CIDEr-D) reward templated wording as much as correct findings,
so evaluation reports them beside finding-level scores, never alone.
"""
