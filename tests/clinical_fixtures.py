"""A `m3fm run` result written by hand, for the SR and FHIR writers' tests (no model needed)."""

from __future__ import annotations

from pathlib import Path

ZH_REPORT = "双肺纹理增多，右肺下叶见磨玻璃影，未见胸腔积液。"


def zh_result(source: Path, *, other_label: str, ood: bool) -> dict:
    """A Chinese CT result for `source`: a report with a located present finding and a negated
    one, covid19 and `other_label` scored (the latter with English prompts, unvalidated), and
    an out-of-distribution verdict `ood`."""
    return {
        "input": str(source), "modality": "ct", "language": "zh", "report": ZH_REPORT,
        "diagnosis": {"covid19": 0.81, other_label: 0.25},
        "prompt_languages": {"covid19": "zh", other_label: "en"},
        "unvalidated": [other_label],
        "findings": [
            {"label": "ground_glass_opacity", "present": True, "side": "right", "lobe": "lower"},
            {"label": "effusion", "present": False, "side": None, "lobe": None},
        ],
        "ood": ood, "ood_score": 4.5 if ood else 1.7, "ood_threshold": 3.2,
    }
