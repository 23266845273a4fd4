"""The COV-CTR reader on synthetic annotation files: good pairs load, bad entries are reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from m3fm.data import covctr
from m3fm.registry import DataFormatError

REPORTS = {"english": "Ground glass opacity, right lower lobe.", "chinese": "右肺下叶磨玻璃影。"}


def entry(image: str, language: str = "english", **fields) -> dict:
    return {
        "id": image,
        "image_path": image,
        "report": REPORTS[language],
        "label1": language,
        "COVID": 1,
        "split": "train",
        "image_path11": f"[{image}]",
        "label2": 1,
        **fields,
    }


def write(folder: Path, splits: dict) -> None:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for name in ("a.png", "b.png", "c.png"):
        (folder / "images" / name).write_bytes(b"\x89PNG")
    (folder / "annotation.json").write_text(json.dumps(splits, ensure_ascii=False), "utf-8")


def problems_by_source(result) -> dict[str, str]:
    return {problem.source: problem.message for problem in result.problems}


def test_pairs_share_a_group_and_carry_labels(tmp_path):
    val = [entry("c.png", split="val", COVID=0), entry("c.png", "chinese", split="val", COVID=0)]
    write(tmp_path, {"train": [entry("a.png"), entry("a.png", "chinese")], "val": val})
    result = covctr.read(tmp_path)
    assert result.problems == ()
    by_id = {record.id: record for record in result.records}
    assert set(by_id) == {"a.png:en", "a.png:zh", "c.png:en", "c.png:zh"}
    english, chinese = by_id["a.png:en"], by_id["a.png:zh"]
    assert english.group == chinese.group == "a.png"
    assert (english.language, chinese.language) == ("en", "zh")
    assert english.image == tmp_path / "images" / "a.png" and english.image.is_absolute()
    assert english.modality == "ct" and english.labels == {"covid19": 1}
    assert by_id["c.png:zh"].split == "val" and by_id["c.png:zh"].labels == {"covid19": 0}
    assert english.source == "annotation.json:train[0]"


def test_test_split_is_read_when_present(tmp_path):
    write(tmp_path, {"train": [entry("a.png")], "test": [entry("b.png", split="test")]})
    assert {record.split for record in covctr.read(tmp_path).records} == {"train", "test"}


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"report": "  "}, "empty field 'report'"),
        ({"report": None}, "missing field 'report'"),
        ({"label1": "french"}, "label1 must be one of english, chinese"),
        ({"COVID": 2}, "COVID must be 0 or 1, got 2"),
        ({"COVID": "yes"}, "COVID must be 0 or 1"),
        ({"image_path": "gone.png", "id": "gone.png"}, "image file not found: images/gone.png"),
        ({"image_path": "../a.png"}, "must be a file name inside images/"),
        ({"split": "val"}, "entry says split 'val' but is listed under 'train'"),
        ({"id": ""}, "missing or empty field 'id'"),
    ],
)
def test_bad_entry_is_a_problem_and_good_rows_still_load(tmp_path, bad, message):
    good = [entry("a.png"), entry("a.png", "chinese")]
    write(tmp_path, {"train": [*good, entry("b.png", **bad)]})
    result = covctr.read(tmp_path)
    assert [record.id for record in result.records] == ["a.png:en", "a.png:zh"]
    problems = problems_by_source(result)
    assert list(problems) == ["annotation.json:train[2]"]
    assert message in problems["annotation.json:train[2]"]


def test_missing_covid_field_and_non_object_entry(tmp_path):
    no_covid = entry("b.png")
    del no_covid["COVID"]
    write(tmp_path, {"train": [entry("a.png"), no_covid, ["not", "an", "object"]]})
    problems = problems_by_source(covctr.read(tmp_path))
    assert problems == {
        "annotation.json:train[1]": "missing field 'COVID'",
        "annotation.json:train[2]": "entry must be an object, got list",
    }


def test_second_report_in_one_language_for_an_image_is_a_problem(tmp_path):
    repeated = entry("a.png", id="a-again.png", split="val")
    write(tmp_path, {"train": [entry("a.png"), entry("a.png", "chinese")], "val": [repeated]})
    result = covctr.read(tmp_path)
    assert len(result.records) == 2
    assert problems_by_source(result) == {
        "annotation.json:val[0]": "duplicate report in this language for this image "
        "(first at annotation.json:train[0])"
    }


def test_missing_annotation_file_is_a_format_error(tmp_path):
    with pytest.raises(DataFormatError, match=r"no annotation\.json in this folder"):
        covctr.read(tmp_path)


def test_invalid_json_names_the_file_and_position(tmp_path):
    (tmp_path / "annotation.json").write_text('{"train": [\n  {"id": 1,}\n]}', "utf-8")
    with pytest.raises(DataFormatError, match=r"annotation\.json: invalid JSON at line 2 column"):
        covctr.read(tmp_path)


@pytest.mark.parametrize(
    ("document", "message"),
    [([1, 2], "expected an object of splits"), ({"train": {}}, "split 'train' must be a list")],
)
def test_wrong_top_level_layout_is_a_format_error(tmp_path, document, message):
    (tmp_path / "annotation.json").write_text(json.dumps(document), "utf-8")
    with pytest.raises(DataFormatError, match=message):
        covctr.read(tmp_path)
