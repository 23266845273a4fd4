"""The readers on the real data sets, as their publishers distribute them."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from m3fm.data import read_dataset

pytestmark = pytest.mark.data


def test_cov_ctr_has_one_english_and_one_chinese_report_per_image(data_root):
    result = read_dataset(data_root / "cov-ctr")
    assert result.problems == ()
    assert {record.dataset for record in result.records} == {"cov-ctr"}
    for split, records, groups in (("train", 1152, 576), ("val", 144, 72)):
        in_split = [record for record in result.records if record.split == split]
        languages = defaultdict(list)
        for record in in_split:
            languages[record.group].append(record.language)
        assert (len(in_split), len(languages)) == (records, groups)
        assert all(sorted(langs) == ["en", "zh"] for langs in languages.values())
    assert all(record.image.is_file() and record.modality == "ct" for record in result.records)


def test_covid_cxr_is_split_by_patient(data_root):
    result = read_dataset(data_root / "covid-cxr")
    assert result.problems == ()
    assert len(result.records) == 241
    assert Counter(record.modality for record in result.records) == {"cxr": 221, "ct": 20}
    splits_of = defaultdict(set)
    for record in result.records:
        splits_of[record.patient].add(record.split)
    assert all(len(splits) == 1 for splits in splits_of.values())
    val_share = sum(record.split == "val" for record in result.records) / len(result.records)
    assert 0.1 < val_share < 0.3
    assert {record.labels["covid19"] for record in result.records} == {0, 1}
    assert sum(record.report == "" for record in result.records) == 3  # kept, as documented


def test_iu_xray_is_a_text_only_english_corpus(data_root):
    result = read_dataset(data_root / "iu-xray-reports")
    assert result.problems == ()
    assert Counter(record.split for record in result.records) == {
        "train": 3062, "val": 382, "test": 382
    }
    assert {(record.dataset, record.language, record.image) for record in result.records} == {
        ("r2gen", "en", None)
    }
