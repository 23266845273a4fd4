"""The scale benchmark: its synthetic corpus, its figures in words and tables, its refusals,
and (slow) a tiny end-to-end run."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
from click.testing import CliRunner
from PIL import Image

from m3fm.benchmarks.scale import Finished, Settings, main, ratios, render_markdown, summary
from m3fm.benchmarks.synthetic import FINDINGS, SIDE, write_corpus
from m3fm.data import read_sources
from m3fm.recipes import DataSource


def test_corpus_is_a_manifest_of_distinct_images_with_repeating_reports(tmp_path):
    manifest = write_corpus(tmp_path, 40, modalities=("cxr", "ct"), val_share=0.1)
    assert manifest == tmp_path / "manifest.jsonl"
    records = read_sources([DataSource(path=".", format="manifest")], tmp_path)
    assert len(records) == 40
    assert [r.split for r in records].count("val") == 4
    assert {r.modality for r in records} == {"cxr", "ct"}
    images = [Image.open(r.image) for r in records]
    assert {image.size for image in images} == {(SIDE, SIDE)}
    assert len({image.tobytes() for image in images}) == 40
    assert len({r.report for r in records}) < 40  # templated: reports repeat as in real data
    for record in records:
        assert set(record.labels) == set(FINDINGS)
        for label, present in record.labels.items():
            assert FINDINGS[label][0 if present else 1] in record.report


def test_corpus_is_a_function_of_the_seed(tmp_path):
    first = write_corpus(tmp_path / "a", 5, seed=3)
    second = write_corpus(tmp_path / "b", 5, seed=3)
    other = write_corpus(tmp_path / "c", 5, seed=4)
    assert first.read_text() == second.read_text() != other.read_text()
    image = "images/000004.png"
    assert (tmp_path / "a" / image).read_bytes() == (tmp_path / "b" / image).read_bytes()


def figures() -> tuple[list[dict], list[dict]]:
    """Rows shaped as the benchmark measures them: two sizes and three `m3fm run` commands."""
    size = {"write_s": 1.0, "corpus_mb": 10.0, "train_wall_s": 30.0, "cache_mb": 5.0,
            "loader_0_images_per_s": 50.0, "loader_n_cached_images_per_s": 400.0}
    sizes = [
        {**size, "size": 100, "first_step_s": 10.0, "steps_per_s": 2.0,
         "step_images_per_s": 64.0, "train_peak_rss_mb": 1000.0, "loader_n_images_per_s": 90.0},
        {**size, "size": 1000, "first_step_s": 12.0, "steps_per_s": 2.0,
         "step_images_per_s": 64.0, "train_peak_rss_mb": 1100.0, "loader_n_images_per_s": 60.0},
    ]
    runs = [{"inputs": 10, "workers": 0, "wall_s": 20.0, "first_result_s": 12.0,
             "inputs_per_s": 1.0, "peak_rss_mb": 1000.0},
            {"inputs": 10, "workers": 2, "wall_s": 15.0, "first_result_s": 11.0,
             "inputs_per_s": 2.0, "peak_rss_mb": 1000.0},
            {"inputs": 100, "workers": 2, "wall_s": 60.0, "first_result_s": 11.0,
             "inputs_per_s": 2.0, "peak_rss_mb": 1050.0}]
    return sizes, runs


def test_results_per_s_counts_a_batch_seen_half_written_as_the_first():
    arrivals = ((10.0, 20), (10.05, 64), (14.0, 128), (18.0, 192))
    assert Finished(0.0, 19.0, 1000.0, arrivals).results_per_s() == pytest.approx(128 / 8)
    assert Finished(0.0, 11.0, 1000.0, arrivals[:2]).results_per_s() is None
    assert Finished(0.0, 11.0, 1000.0, arrivals[:2]).first_result_s() == 10.0


def test_ratios_and_summary_compare_sizes_and_the_loader_with_the_step():
    sizes, runs = figures()
    settings = Settings(sizes=(100, 1000), batch_size=32, workers=2)
    assert ratios(sizes, runs, settings) == pytest.approx({
        "train_peak_rss 1000/100": 1.1, "first_step 1000/100": 1.2, "steps_per_s 1000/100": 1.0,
        "run_inputs_per_s 2/0 workers": 2.0, "run_peak_rss 100/10 inputs": 1.05})
    lines = summary(sizes, runs, settings)
    assert "training peak RSS 1000/100 = 1.10× (target ≤ 1.25×)" in lines
    assert "time to the first step 1000/100 = 1.20× (target ≤ 2×)" in lines
    assert ("100 pairs: the loader with 2 workers reads 90 img/s (400 from the cache); training "
            "at 2.00 steps/s × 32 takes 64 img/s: it keeps up") in lines
    assert lines[3].startswith("100 pairs") and lines[4].endswith("it falls behind")
    assert "m3fm run peak RSS 100/10 inputs = 1.05×" in lines


def test_markdown_has_the_command_both_tables_and_the_ratios():
    sizes, runs = figures()
    settings = Settings(sizes=(100, 1000))
    results = {"meta": {"command": settings.command(), "settings": asdict(settings),
                        "m3fm_version": "0", "git_commit": None, "hardware": "2 CPU cores",
                        "date": "2026-01-01"},
               "sizes": sizes, "run": runs, "summary": summary(sizes, runs, settings)}
    markdown = render_markdown(results)
    assert "`python -m m3fm.benchmarks.scale --sizes 100,1000 --modality cxr" in markdown
    assert "loader 2w cached img/s" in markdown
    assert "first result s" in markdown
    assert "- m3fm run inputs/s 2/0 workers = 2.00×" in markdown


@pytest.mark.parametrize(("args", "message"), [
    (["--sizes", "200,x"], "expected sizes like 2000,20000"),
    (["--sizes", "200", "--run-inputs", "30"], "needs a corpus of at least 300 pairs"),
    (["--sizes", "40", "--run-inputs", "2"], "at least two batches"),
])
def test_refuses_settings_it_cannot_measure(args, message):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert message in result.output


@pytest.mark.slow
def test_tiny_run_prints_and_writes_every_figure(tmp_path):
    result = CliRunner().invoke(main, [
        "--sizes", "40,80", "--steps", "5", "--batch-size", "4", "--workers", "1",
        "--loader-images", "8", "--run-inputs", "4", "--input-size", "32",
        "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"),
    ])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [row["size"] for row in results["sizes"]] == [40, 80]
    for row in results["sizes"]:
        assert row["first_step_s"] > 0 and row["steps_per_s"] > 0
        assert row["train_peak_rss_mb"] > 100 and row["cache_mb"] > 0
        assert row["loader_n_cached_images_per_s"] > 0
    assert [(r["inputs"], r["workers"]) for r in results["run"]] == [(4, 0), (4, 1), (40, 1)]
    for row in results["run"]:
        assert 0 < row["first_result_s"] <= row["wall_s"] and row["peak_rss_mb"] > 100
        assert row["inputs_per_s"] is None  # every result arrived in the first batch
    assert results["ratios"]["run_peak_rss 40/4 inputs"] > 0
    assert "training peak RSS 80/40 = " in result.output
    assert "m3fm run inputs/s 1/0 workers = n/a" in result.output
    assert (tmp_path / "out" / "results.md").read_text() in result.output


@pytest.mark.slow
def test_a_failing_sub_step_is_one_line_naming_it(tmp_path):
    result = CliRunner().invoke(main, ["--sizes", "80", "--batch-size", "4", "--run-inputs",
                                       "4", "--backbone", "no-such-backbone",
                                       "--work", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.startswith(
        "Error: training on 80 pairs failed: `m3fm train` exited with 2: m3fm: error: unknown")
    assert len(result.output.strip().splitlines()) == 1
