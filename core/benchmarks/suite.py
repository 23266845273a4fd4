"""`m3fm benchmark`: train (or reuse) every model the paper's settings need, then measure all.

One command reproduces every table: report generation for the zero-shot, few-shot and
supervised settings in English and Chinese with their baselines, retrieval, and diagnosis on
COV-CTR (CT, COVID-19 vs not) and covid-cxr (X-ray, COVID-19 vs other findings; split by
patient).  Models are trained through the same recipes `m3fm train` uses, each in
``RUNS/<recipe>``; a finished one is reused and an interrupted one resumed, so a second call
only measures.  ``--quick`` trains tiny models for a few steps on a few images per class: it
checks the whole pipeline in CI, and its numbers mean nothing.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from m3fm import __version__
from m3fm.checkpoint import provenance, read_metadata
from m3fm.recipes import AlignRecipe, GenerateRecipe, load_recipe
from m3fm.registry import (
    M3fmError,
    MissingDataError,
    NotAvailableError,
    Record,
    UsageError,
)
from m3fm.training import FINAL_DIR

SETTINGS = ("zeroshot", "fewshot", "supervised")
"""Report-generation settings: how many CT images paired with their reports the generator saw."""


SKIPPABLE = (MissingDataError, NotAvailableError)
"""What a measuring step raises when the data or the plugins cannot serve it: skipped, noted."""


class BenchmarkError(M3fmError):
    """One step of the benchmark (training a recipe, or measuring a table) failed.

    Fix: the message names the recipe and data set and gives the cause; fix that and run the
    same command again: trained models are reused, an interrupted training is resumed, and the
    tables measured before the failure are already in the results folder.
    """


@dataclass(frozen=True)
class Stage:
    """One model to train: its recipe, its data folder under ``--data``, and the alignment
    recipe whose model it decodes from (generators only).  `recipe` is the recipe's name (the
    folder under ``--runs``); `source` is its file when it is not shipped with m3fm."""

    recipe: str
    data: str
    align: str | None = None
    source: str | None = None

    def load(self, overrides: dict[str, str]) -> AlignRecipe | GenerateRecipe:
        return load_recipe(self.source or self.recipe, overrides)


def extra_stages(path: Path) -> list[Stage]:
    """The stages of a recipe file given with ``--recipe`` (a plugin's, say): the recipe and,
    for a generator, the alignment recipe it names; their data paths are relative to --data."""
    recipe = load_recipe(str(path))
    if recipe.stage == "align":
        return [Stage(recipe.name, ".", source=str(path))]
    if recipe.align.recipe is None:
        raise UsageError(f"--recipe {path}: name the alignment model by align.recipe, not "
                         "align.checkpoint, so the benchmark can train and record it")
    align = load_recipe(recipe.align.recipe)
    return [Stage(align.name, ".", source=recipe.align.recipe),
            Stage(recipe.name, ".", align=align.name, source=str(path))]


STAGES = (
    Stage("cov-ctr-align", "cov-ctr"),
    Stage("m3fm-small-align", "."),
    Stage("multidomain-align", "."),
    *(Stage(f"cov-ctr-{lang}-{setting}", "cov-ctr", align="cov-ctr-align")
      for lang in ("zh", "en") for setting in SETTINGS),
    Stage("m3fm-small", ".", align="m3fm-small-align"),
)
QUICK_RECIPES = ("cov-ctr-align", "m3fm-small-align", "cov-ctr-zh-zeroshot",
                 "cov-ctr-en-zeroshot", "m3fm-small")

QUICK_OVERRIDES = {
    "align": {
        "model.image.backbone": "test_resnet", "model.image.input_size": "32",
        "model.embed_dim": "16", "model.text.vocab_size": "300", "model.text.hidden_size": "32",
        "model.text.num_layers": "1", "model.text.num_heads": "2",
        "model.text.intermediate_size": "64", "model.text.max_length": "48",
        "data.batch_size": "8", "data.parallel_batch_size": "8",
    },
    "generate": {
        "model.hidden_size": "32", "model.prefix_tokens": "2", "model.encoder_layers": "1",
        "model.decoder_layers": "1", "model.num_heads": "2", "model.intermediate_size": "64",
        "model.max_length": "48", "data.batch_size": "8", "decode.max_new_tokens": "24",
    },
    "both": {"train.max_steps": "3", "train.warmup_steps": "0", "train.eval_every": "0",
             "train.save_every": "0"},
}
"""Tiny models, a few steps: what `--quick` trains instead of the recipes' own sizes."""


@dataclass(frozen=True)
class Scale:
    """How much of the data and how many repetitions a benchmark uses."""

    per_class: int | None  # images per class in each split; None: all
    shots: tuple[str, ...]
    seeds: tuple[int, ...]
    cnn_epochs: int


FULL = Scale(per_class=None, shots=("1", "5", "10", "10%", "100%"), seeds=(0, 1, 2, 3, 4),
             cnn_epochs=15)
QUICK = Scale(per_class=6, shots=("1", "5", "100%"), seeds=(0, 1), cnn_epochs=1)

DIAGNOSIS_SETS = (
    # data folder, modality, label, alignment model, report models per language
    ("cov-ctr", "ct", "covid19", "cov-ctr-align",
     {"zh": "cov-ctr-zh-zeroshot", "en": "cov-ctr-en-zeroshot"}),
    ("cov-ctr", "ct", "covid19", "m3fm-small", {"zh": "m3fm-small", "en": "m3fm-small"}),
    ("covid-cxr", "cxr", "covid19", "m3fm-small", {"zh": "m3fm-small", "en": "m3fm-small"}),
    ("covid-cxr", "cxr", "covid19", "multidomain-align", {}),
)
RETRIEVAL_SETS = (("cov-ctr", "cov-ctr-align"), ("cov-ctr", "m3fm-small"),
                  ("covid-cxr", "m3fm-small"))


class Benchmark:
    """The models in `runs` and the results of measuring them on `split` of `data`."""

    def __init__(self, data: Path, runs: Path, *, split: str = "val", quick: bool = False,
                 recipes: Sequence[Path] = (),
                 notify: Callable[[str], None] = lambda message: None) -> None:
        for folder in ("cov-ctr", "covid-cxr", "iu-xray-reports"):
            if not (data / folder).is_dir():
                raise UsageError(f"--data {data}: no {folder}/ folder (the benchmark needs "
                                 "cov-ctr, covid-cxr and iu-xray-reports side by side)")
        self.data, self.split, self.quick, self.notify = data, split, quick, notify
        self.runs = runs / "quick" if quick else runs
        self.scale = QUICK if quick else FULL
        self.stages = [s for s in STAGES if not quick or s.recipe in QUICK_RECIPES]
        self.recipe_files = [Path(path) for path in recipes]
        self.extras = [stage for path in self.recipe_files for stage in extra_stages(path)]
        self.stages += [s for s in self.extras if s.recipe not in {t.recipe for t in self.stages}]
        self.timings: dict[str, float] = {}
        self.skipped: list[dict[str, str]] = []  # steps the data or plugins cannot serve
        self._read: dict[str, list[Record]] = {}  # each data set read once, however often used

    def model_dir(self, recipe: str) -> Path:
        return self.runs / recipe / FINAL_DIR

    def train(self) -> None:
        """Train every stage's model that `runs` lacks; resume one that was interrupted."""
        from m3fm.recipes.training import train_recipe

        for stage in self.stages:
            if self._reusable(stage) or self._feeds_only_trained_models(stage):
                continue
            out = self.runs / stage.recipe
            resume = (out / "checkpoints").is_dir()
            self.notify(f"{'resuming' if resume else 'training'} {stage.recipe} in {out}")
            recipe = stage.load(self._overrides(stage))
            started = time.perf_counter()
            try:
                train_recipe(recipe, self.data / stage.data, out, resume=resume,
                             notify=self.notify)
            except M3fmError as exc:
                raise BenchmarkError(f"training {stage.recipe} on {self.data / stage.data} "
                                     f"failed: {exc}") from exc
            self.timings[f"train {stage.recipe}"] = time.perf_counter() - started

    def _reusable(self, stage: Stage) -> bool:
        final = self.model_dir(stage.recipe)
        if not final.is_dir():
            return False
        try:
            trained = read_metadata(final)["task"]["recipe"]["name"]
        except (M3fmError, KeyError, TypeError):
            trained = None
        if trained != stage.recipe:
            raise UsageError(f"{final} holds {trained or 'an unknown model'}, not "
                             f"{stage.recipe}; move it away or choose other --runs")
        return True

    def _feeds_only_trained_models(self, stage: Stage) -> bool:
        """Whether `stage` is an alignment model that no table measures and that every
        generator decoding from it already has: training it would change no figure.  This is
        how the bundled m3fm-small, put in ``RUNS/m3fm-small/final``, is measured as shipped
        without training its alignment model again."""
        measured = ({entry[3] for entry in DIAGNOSIS_SETS} | {r for _, r in RETRIEVAL_SETS}
                    | {s.recipe for s in self.extras})
        generators = [s for s in self.stages if s.align == stage.recipe]
        return (stage.recipe not in measured and bool(generators)
                and all(self._reusable(generator) for generator in generators))

    def _overrides(self, stage: Stage) -> dict[str, str]:
        overrides = {}
        if stage.align is not None:
            overrides["align.checkpoint"] = str(self.model_dir(stage.align))
        if self.quick:
            kind = "generate" if stage.align is not None else "align"
            overrides |= QUICK_OVERRIDES[kind] | QUICK_OVERRIDES["both"]
        return overrides

    def measure(self, publish: Callable[[dict], None] = lambda results: None
                ) -> dict[str, object]:
        """Every table, as JSON-ready data (see :mod:`m3fm.benchmarks.results`).

        `publish` gets the results after each table, so that the tables measured before a
        failure are kept; the failure is raised as a BenchmarkError naming what failed.  A
        step the data cannot serve (no labelled images of a modality, no references in a
        language, no finding extractor) is skipped, its reason listed in ``meta.skipped``,
        and the rest is measured.
        """
        results: dict[str, object] = {"meta": self._meta(), "report": [], "retrieval": [],
                                      "diagnosis": []}
        trained = {stage.recipe for stage in self.stages}
        generators = ", ".join(self._built_in_generators())
        steps: list[tuple[str, str, Callable, tuple]] = [
            ("report", f"report generation on cov-ctr with {generators}",
             self._report_generation, ()),
            ("retrieval", "retrieval on " + ", ".join(f"{data} with {recipe}"
                                                      for data, recipe in RETRIEVAL_SETS),
             self._retrieval, ()),
            *(("diagnosis", f"diagnosis on {entry[0]} with {entry[3]}", self._diagnosis, entry)
              for entry in DIAGNOSIS_SETS if entry[3] in trained),
        ]
        for stage in self.extras:
            if stage.align is not None:
                steps.append(("report", f"report generation with {stage.recipe} on its data",
                              self._extra_reports, (stage,)))
            else:
                steps.append(("diagnosis", f"diagnosis with {stage.recipe} on its data",
                              self._extra_diagnosis, (stage,)))
        for key, name, work, args in steps:
            try:
                table = self._timed(name, work, *args)
            except SKIPPABLE as exc:
                self._skip(name, exc)
                self._publish(results, publish)
                continue
            except Exception as exc:
                results["meta"]["failed"] = f"{name}: {type(exc).__name__}: {exc}"
                self._publish(results, publish)
                raise BenchmarkError(f"{name} failed ({_one_line(exc)}); the tables measured "
                                     "before it are written") from exc
            if key == "diagnosis":
                results[key].append(table)
            else:
                results[key] += table
            self._publish(results, publish)
        return results

    def _publish(self, results: dict, publish: Callable[[dict], None]) -> None:
        results["meta"]["timings_s"] = {k: round(v, 1) for k, v in self.timings.items()}
        results["meta"]["skipped"] = list(self.skipped)
        publish(results)

    def _skip(self, step: str, exc: Exception) -> None:
        self.notify(f"skipped {step}: {_one_line(exc)}")
        self.skipped.append({"step": step, "reason": _one_line(exc)})

    def _timed(self, name: str, work: Callable, *args):
        self.notify(f"measuring {name}")
        started = time.perf_counter()
        try:
            return work(*args)
        finally:
            self.timings[name] = time.perf_counter() - started

    def _records(self, folder: str, modality: str, label: str = "covid19") -> list[Record]:
        """The data set's records; with --quick only a few images per class of each split."""
        from m3fm.data import read_records

        if folder not in self._read:
            self._read[folder] = read_records(self.data / folder)
        return self._few_per_class(self._read[folder], modality, label)

    def _recipe_records(self, stage: Stage, modality: str) -> tuple[list[Record], str]:
        """The records of the data sources an extra recipe names (read once), and the label
        they are diagnosed on."""
        from m3fm.data import read_sources
        from m3fm.diagnosis.evaluation import recorded_label

        sources = stage.load({}).data.sources
        key = f"{stage.data}: {sources}"  # a generator and its alignment recipe share a read
        if key not in self._read:
            self._read[key] = read_sources(sources, self.data / stage.data)
        records = self._read[key]
        label = recorded_label(modality, records)
        return self._few_per_class(records, modality, label), label

    def _few_per_class(self, records: list[Record], modality: str, label: str) -> list[Record]:
        from m3fm.diagnosis.evaluation import labelled_images

        if self.scale.per_class is None:
            return records
        kept = set()
        for split in {r.split for r in records}:
            kept |= set(labelled_images(records, split=split, modality=modality, label=label,
                                        limit=self.scale.per_class).paths)
        return [r for r in records if r.image in kept]

    def _built_in_generators(self) -> list[str]:
        """The report models scored on COV-CTR's CT images: the paper's settings, then the
        bundled m3fm-small (CT and X-ray, so it comes last: the first model's modalities
        choose the images)."""
        return [s.recipe for s in self.stages if s.align is not None and s not in self.extras]

    def _report_generation(self) -> list[dict[str, object]]:
        from m3fm.generation.evaluation import evaluate_report_models
        from m3fm.generation.reporting import ReportModel

        models = {recipe: ReportModel.from_pretrained(self.model_dir(recipe))
                  for recipe in self._built_in_generators()}
        return evaluate_report_models(models, self._records("cov-ctr", "ct"),
                                      split=self.split).rows

    def _retrieval(self) -> list[dict[str, object]]:
        from m3fm.alignment.retrieval import evaluate_retrieval, retrieval_sets
        from m3fm.generation import load

        rows = []
        for folder, recipe in RETRIEVAL_SETS:
            model = load(self.model_dir(recipe))
            modalities = [m for m in model.modalities if folder != "covid-cxr" or m == "cxr"]
            records = self._records(folder, modalities[0])
            sets = retrieval_sets(records, split=self.split, modalities=modalities,
                                  languages=model.languages)
            rows += [{"data": folder, "model": recipe, **row}
                     for row in evaluate_retrieval(sets, model)]
        return rows

    def _extra_reports(self, stage: Stage) -> list[dict[str, object]]:
        """An extra generator's report table on its own recipe's data, a language at a time.

        Each language is scored against its own references where the split has them, and
        every language but the anchor also against the anchor's references by its findings
        (the cross-lingual clinical score, which needs finding extractors in both): the one
        score a language added with text only can have, and a check of the other.
        """
        from m3fm.alignment.data import anchor_language
        from m3fm.generation.evaluation import evaluate_report_models
        from m3fm.generation.reporting import ReportModel

        model = ReportModel.from_pretrained(self.model_dir(stage.recipe))
        records, _ = self._recipe_records(stage, model.modalities[0])
        anchor = anchor_language(model.languages).code
        rows: list[dict[str, object]] = []
        for language in model.report_languages:
            reported = any(r.language == language and r.image is not None
                           and r.split == self.split for r in records)
            references = [language] if reported else []
            references += [anchor] if language != anchor else []
            for reference in references:
                try:
                    rows += evaluate_report_models(
                        {stage.recipe: model}, records, split=self.split,
                        languages=[language], reference_language=reference).rows
                except SKIPPABLE as exc:  # one gap leaves the other rows
                    self._skip(f"report generation with {stage.recipe} in {language} "
                               f"against {reference} references", exc)
        return rows

    def _extra_diagnosis(self, stage: Stage) -> dict[str, object]:
        """Zero-shot diagnosis from images with an extra alignment model, in each of its
        languages, beside the probes and baselines (report-based scores would need every
        tuning image's report, which the built-in blocks already pay for)."""
        recipe = stage.load({})
        modality = recipe.model.modalities[0]
        records, label = self._recipe_records(stage, modality)
        data = "+".join(source.path for source in recipe.data.sources)
        return self._diagnosis_on(data, records, modality, label, stage.recipe, {})

    def _diagnosis(self, folder: str, modality: str, label: str, model_recipe: str,
                   reporter_recipes: dict[str, str]) -> dict[str, object]:
        return self._diagnosis_on(folder, self._records(folder, modality, label), modality,
                                  label, model_recipe, reporter_recipes)

    def _diagnosis_on(self, data: str, records: list[Record], modality: str, label: str,
                      model_recipe: str, reporter_recipes: dict[str, str]) -> dict[str, object]:
        from m3fm.diagnosis.evaluation import evaluate_diagnosis
        from m3fm.generation import load
        from m3fm.generation.reporting import ReportModel

        loaded: dict[str, object] = {}

        def model(recipe: str):
            if recipe not in loaded:
                loaded[recipe] = load(self.model_dir(recipe))
            return loaded[recipe]

        reporters = {lang: model(recipe) for lang, recipe in reporter_recipes.items()
                     if self.model_dir(recipe).is_dir()}
        reporters = {lang: m for lang, m in reporters.items() if isinstance(m, ReportModel)}
        result = evaluate_diagnosis(
            model(model_recipe), records, modality=modality,
            label=label, split=self.split, reporters=reporters, shots=self.scale.shots,
            seeds=self.scale.seeds, cnn_epochs=self.scale.cnn_epochs,
        )
        return {"data": data, "modality": modality, "label": label, "model": model_recipe,
                "rows": result.rows, "few_shot": result.few_shot, "curves": result.curves}

    def _meta(self) -> dict[str, object]:
        command = f"m3fm benchmark --data DATA --split {self.split}" + (
            " --quick" if self.quick else "") + "".join(
            f" --recipe {path}" for path in self.recipe_files)
        return {
            "command": command, "split": self.split, "quick": self.quick,
            "m3fm_version": __version__, "git_commit": provenance()["git_commit"],
            "hardware": hardware(), "date": time.strftime("%Y-%m-%d"),
            "models": {s.recipe: str(self.model_dir(s.recipe)) for s in self.stages
                       if self.model_dir(s.recipe).is_dir()},  # not an unneeded, untrained one
            "extra_recipes": [s.recipe for s in self.extras],
        }


def hardware() -> str:
    """The machine in words: CPU, cores, and the GPU when one is used."""
    cpu = platform.processor() or platform.machine()
    text = f"{os.cpu_count()} CPU cores ({cpu}), {platform.system()}"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text + f", torch {torch.__version__}"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
