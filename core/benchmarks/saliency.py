"""Are the saliency maps of ``m3fm run --heatmaps`` faithful to the model, and what do they cost?

For each method and the bundled model, on the first N validation images per modality (cov-ctr
CT slices, covid-cxr X-rays; the plugins' sample images when no data is found), with every
label's direction and the report the model writes for the image as targets:

* **randomisation** (Adebayo et al. 2018): Spearman rank correlation of the trained model's maps
  with those of a copy whose image tower is freshly initialised; near 0 is faithful, near 1
  means the map shows the image rather than the model (read the mean: one map's value is
  noisy where the feature map is coarse, 4 × 4 for the bundled tower);
* **deletion**: the drop of the target's score (in logits: score × the model's logit scale)
  when the 20% most salient pixels are blurred, beside blurring a region of the same shape at a
  random place; a faithful map removes more evidence;
* **seconds per input** for all targets of an input, and for Grad-CAM also captum's
  LayerGradCam run one target at a time (what one shared forward pass saves)::

    python -m m3fm.benchmarks.saliency --n 8
    python -m m3fm.benchmarks.saliency --data DIR --n 4 --methods gradcam --json
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import click
import torch
import torch.nn.functional as F
from captum.attr import LayerGradCam

from m3fm.clinical.saliency import (
    METHODS,
    _image_tower,
    _pooling,
    label_directions,
    randomised_copy,
    rank_correlation,
    saliency_maps,
)
from m3fm.data import read_records
from m3fm.diagnosis.zeroshot import PromptClassifier
from m3fm.embedding import Embedder
from m3fm.generation import load
from m3fm.imaging import preprocess
from m3fm.models import default_model_dir
from m3fm.registry import get_registry

DATA_SETS = {"ct": "cov-ctr", "cxr": "covid-cxr"}
DELETED = 0.2
"""Share of pixels blurred by the deletion test."""
LANG = "en"


def validation_images(data: Path | None, modality: str, count: int) -> tuple[list[Path], str]:
    """The first `count` distinct validation images of `modality`'s data set under `data`, and
    where they come from; the plugin's sample files when there is none."""
    folder = data / DATA_SETS[modality] if data is not None else None
    if folder is not None and folder.is_dir():
        seen: dict[Path, None] = {}
        for record in read_records(folder):
            if record.split == "val" and record.modality == modality and record.image:
                seen.setdefault(record.image)
        if seen:
            return list(seen)[:count], f"{DATA_SETS[modality]} val"
    return list(get_registry().modality(modality).sample_files)[:count], "plugin sample"


def blurred(image: torch.Tensor) -> torch.Tensor:
    """`image` (C, H, W) under a Gaussian blur of σ = 4% of its width: its content removed,
    its intensities kept (unlike a constant fill, which is itself a strong feature)."""
    sigma = max(1.0, 0.04 * image.shape[-1])
    radius = int(3 * sigma)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-offsets**2 / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    planes = image.unsqueeze(1)
    planes = F.conv2d(F.pad(planes, (radius, radius, 0, 0), mode="reflect"),
                      kernel.view(1, 1, 1, -1))
    planes = F.conv2d(F.pad(planes, (0, 0, radius, radius), mode="reflect"),
                      kernel.view(1, 1, -1, 1))
    return planes.squeeze(1)


def deletion_drops(embedder: Embedder, image: torch.Tensor, modality: str,
                   targets: dict[str, torch.Tensor], maps: dict[str, torch.Tensor],
                   generator: torch.Generator) -> list[tuple[float, float]]:
    """Per target, (score drop with the top-20% salient pixels blurred, with a region of the same
    shape at a random place blurred: the map rolled by a quarter to three quarters of the image),
    in logits.  A same-shaped region, not scattered pixels, since blurring scattered pixels adds
    high-frequency noise that moves scores by itself."""
    soft = blurred(image)
    pixels = image.shape[-2] * image.shape[-1]
    kept = int(DELETED * pixels)
    variants = [image]
    height, width = image.shape[-2:]
    for name in targets:
        shift = [int(side * (0.25 + 0.5 * torch.rand(1, generator=generator))) for side in
                 (height, width)]
        elsewhere = maps[name].roll(shift, dims=(-2, -1))
        for ranked in (maps[name], elsewhere):
            chosen = ranked.flatten().argsort(descending=True)[:kept]
            mask = torch.zeros(pixels, dtype=torch.bool)
            mask[chosen] = True
            variants.append(torch.where(mask.view(height, width), soft, image))
    embeddings = embedder.embed_images(variants, modality, precision="fp32")
    directions = torch.stack(list(targets.values()))
    scores = embedder.logit_scale * embeddings @ directions.T  # (variants, targets)
    return [(float(scores[0, t] - scores[1 + 2 * t, t]), float(scores[0, t] - scores[2 + 2 * t, t]))
            for t in range(len(targets))]


def captum_gradcam_seconds(embedder: Embedder, image: torch.Tensor, modality: str,
                           targets: dict[str, torch.Tensor]) -> float:
    """Seconds for captum's LayerGradCam on the same layer, one target (one forward) at a time."""
    model = embedder.model
    directions = torch.stack(list(targets.values())).to(embedder.device)
    layer = _pooling(_image_tower(model, modality))
    gradcam = LayerGradCam(lambda batch: model.encode_image(modality, batch) @ directions.T,
                           layer)
    started = time.perf_counter()
    with torch.enable_grad():
        for index in range(len(directions)):
            gradcam.attribute(image.unsqueeze(0).to(embedder.device), target=index,
                              attribute_to_layer_input=True, relu_attributions=True)
    return time.perf_counter() - started


def _summary(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "max": max(values),
            "mean_abs": statistics.fmean(abs(value) for value in values)}


@click.command()
@click.option("--data", type=click.Path(path_type=Path, file_okay=False), envvar="M3FM_DATA",
              show_envvar=True, help="Folder holding cov-ctr/ and covid-cxr/; without it the "
              "plugins' sample images.")
@click.option("--n", "count", default=8, show_default=True, type=click.IntRange(min=1),
              help="Validation images per modality.")
@click.option("--methods", default=",".join(METHODS), show_default=True,
              help="Comma-separated saliency methods to compare.")
@click.option("--json", "as_json", is_flag=True, help="Print only the JSON line.")
def main(data: Path | None, count: int, methods: str, as_json: bool) -> None:
    """Rank correlation against a randomised model, deletion drops and time per method."""
    chosen = [method.strip() for method in methods.split(",") if method.strip()]
    for method in chosen:
        if method not in METHODS:
            raise click.BadParameter(f"{method!r}; use {', '.join(METHODS)}",
                                     param_hint="--methods")
    model = load(default_model_dir())
    randomised = randomised_copy(model)
    generator = torch.Generator().manual_seed(0)
    rows: dict[tuple[str, str], dict[str, list[float]]] = {}
    seconds: dict[str, list[float]] = {method: [] for method in chosen}
    captum_seconds: list[float] = []
    sources = {}
    for modality in model.modalities:
        paths, sources[modality] = validation_images(data, modality, count)
        spec = get_registry().modality(modality)
        images = [preprocess(spec, path) for path in paths]
        classifier = PromptClassifier(model, get_registry().modality_labels(modality), LANG)
        labels = label_directions(classifier)
        reports = model.embed_texts(model.generate(images, modality, LANG), LANG)
        for image, report in zip(images, reports, strict=True):
            targets = {**labels, "report": report}
            for method in chosen:
                started = time.perf_counter()
                trained = saliency_maps(model, image, modality, targets, method)
                seconds[method].append(time.perf_counter() - started)
                random = saliency_maps(randomised, image, modality, targets, method)
                drops = deletion_drops(model, image, modality, targets, trained, generator)
                for name, (top, chance) in zip(targets, drops, strict=True):
                    row = rows.setdefault((method, "report" if name == "report" else "label"),
                                          {"rho": [], "top": [], "random": []})
                    row["rho"].append(rank_correlation(trained[name], random[name]))
                    row["top"].append(top)
                    row["random"].append(chance)
            if "gradcam" in chosen:
                captum_seconds.append(captum_gradcam_seconds(model, image, modality, targets))
    results = {
        "inputs": sources, "count": count, "cpus": os.cpu_count(), "threads":
        torch.get_num_threads(),
        "seconds_per_input": {method: statistics.fmean(values)
                              for method, values in seconds.items()},
        "rows": [{"method": method, "targets": kind, "maps": len(row["rho"]),
                  "rank_correlation": _summary(row["rho"]),
                  "deletion_drop_top20": statistics.fmean(row["top"]),
                  "deletion_drop_elsewhere": statistics.fmean(row["random"])}
                 for (method, kind), row in rows.items()],
    }
    if captum_seconds:
        results["seconds_per_input"]["gradcam_captum_per_target"] = statistics.fmean(
            captum_seconds)
    if not as_json:
        inputs = ", ".join(f"{modality}: {count} × {source}"
                           for modality, source in sources.items())
        click.echo(f"bundled model, {inputs}; {torch.get_num_threads()} threads\n")
        click.echo(f"{'method':10} {'targets':8} {'maps':>5} {'rho mean':>9} {'rho max':>8} "
                   f"{'|rho| mean':>10} {'drop top20':>10} {'drop else':>10}")
        for row in results["rows"]:
            rho = row["rank_correlation"]
            click.echo(f"{row['method']:10} {row['targets']:8} {row['maps']:5d} "
                       f"{rho['mean']:9.3f} {rho['max']:8.3f} {rho['mean_abs']:10.3f} "
                       f"{row['deletion_drop_top20']:10.3f} "
                       f"{row['deletion_drop_elsewhere']:10.3f}")
        click.echo("\nseconds per input (all targets):")
        for method, value in results["seconds_per_input"].items():
            click.echo(f"  {method:28} {value:8.2f}")
    click.echo(json.dumps(results))


if __name__ == "__main__":
    main()
