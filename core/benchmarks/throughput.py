"""How close the ``m3fm run`` path comes to the machine's matmul throughput.

Runs ``m3fm run``'s batched path on the same inputs in fp32 and in the precision decoding
chooses (``DecodeConfig.precision``; ``auto`` is ``bf16-images`` only where the hardware has
native bf16),
counts the floating-point operations of each stage with ``torch.utils.flop_counter`` (image
tower, bridge, generator encoder, decoding steps) and times them, and prints the achieved
GFLOP/s beside a 2048×2048 matmul measured in the same run::

    python -m m3fm.benchmarks.throughput --inputs 64
    python -m m3fm.benchmarks.throughput --inputs 64 --images DIR --threads 1 --json

The peak is the best matmul figure (fp32, or bf16 where it is native); the ratio that counts
is achieved / peak, since both move together with the load on the machine.  When a second
precision runs, its reports are compared with fp32's: identical count and corpus BLEU-4.
The same fp32 stages also run on the networks training uses (transformers' BART and BERT,
timm's ResNet; ``ReportModel.from_pretrained(lean=False)``), the baseline of the plain-torch
ones of :mod:`m3fm.lean` that ``m3fm run`` uses; their reports are compared too.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import click
import torch
from torch.utils.flop_counter import FlopCounterMode

from m3fm.benchmarks.decoding import (
    batched_cached,
    benchmark_inputs,
    loaded_model,
    timed,
    workload_options,
)
from m3fm.embedding import computing_in, native_bf16, resolved_precision
from m3fm.generation.bridge import bridge
from m3fm.generation.reporting import ReportModel
from m3fm.imaging import preprocess
from m3fm.registry import get_registry

TRAINING_NETWORKS = "fp32, training networks"
"""The run on transformers' and timm's networks (the baseline of m3fm.lean's)."""
MATMUL_SIZE = 2048
REPEATS = 2
"""Timed runs of each stage and of the whole path; the best counts."""


def matmul_gflops(dtype: torch.dtype, device: torch.device, size: int = MATMUL_SIZE,
                  repeats: int = 5) -> float:
    """Best GFLOP/s of a size × size matmul in `dtype` over `repeats` runs."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    best = float("inf")
    for _ in range(repeats + 1):  # the first is a warm-up
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _counted(function, *args, **kwargs) -> tuple[float, float, object]:
    """(GFLOP, seconds, result) of a call: GFLOP counted on an untimed call (which warms up),
    seconds the best of REPEATS timed ones (the least disturbed by other load)."""
    with FlopCounterMode(display=False) as counter:
        function(*args, **kwargs)
    seconds, result = min((timed(lambda: function(*args, **kwargs)) for _ in range(REPEATS)),
                          key=lambda outcome: outcome[0])
    return counter.get_total_flops() / 1e9, seconds, result


def stage_figures(model: ReportModel, images: list[torch.Tensor], modality: str, lang: str,
                  precision: str) -> dict[str, dict[str, float]]:
    """GFLOP and seconds of each stage of decoding `images` (one batch of preprocessed
    tensors) in `precision`: image tower, bridge, generator encoder, decoding steps."""
    decode = model.decode.model_copy(update={"precision": precision})
    generator, device = model.generator, model.device
    figures = {}
    with torch.no_grad():
        flops, seconds, embeddings = _counted(
            model.embed_images, images, modality=modality, batch_size=len(images),
            precision=precision)
        figures["image_tower"] = (flops, seconds)
        embeddings = embeddings.to(device)
        flops, seconds, points = _counted(bridge, embeddings, lang, decode, model.bank, modality)
        figures["bridge"] = (flops, seconds)
        style = modality if model.bank.covers(modality, lang) else None
        language_ids = torch.full((len(points),), generator.language_id(lang), device=device)
        modality_ids = torch.full_like(language_ids, generator.modality_id(style))
        with computing_in(precision, device, "decoder"):
            inputs = generator.encoder_inputs(points, language_ids, modality_ids)
            flops, seconds, _ = _counted(generator.bart.get_encoder(), inputs_embeds=inputs)
            figures["encoder"] = (flops, seconds)
            flops, seconds, ids = _counted(generator.generate, points, lang, decode,
                                           modality=style)
    # generate runs the encoder too: the decoding steps are the rest.
    encoder_flops, encoder_seconds = figures["encoder"]
    steps = max(len(row) for row in ids) + 1
    figures["decode_steps"] = (flops - encoder_flops, max(seconds - encoder_seconds, 0.0))
    out = {name: {"gflop": round(f, 4), "seconds": round(s, 4)}
           for name, (f, s) in figures.items()}
    out["decode_steps"]["steps"] = steps
    return out


def agreement(reference: list[str], reports: list[str], lang: str) -> dict[str, object]:
    """How many `reports` equal `reference` and their corpus BLEU-4 against it."""
    import sacrebleu

    bleu = sacrebleu.corpus_bleu(reports, [reference], tokenize="zh" if lang == "zh" else "13a")
    return {"identical": sum(a == b for a, b in zip(reference, reports, strict=True)),
            "of": len(reference), "bleu4": round(bleu.score, 2)}


def run_precision(model: ReportModel, inputs: list[Path], images: list[torch.Tensor],
                  modality: str, lang: str, precision: str) -> tuple[dict, list[str]]:
    """Figures of one precision: per stage, ``m3fm run`` end to end, achieved GFLOP/s."""
    model.decode = model.decode.model_copy(update={"precision": precision})
    stages = stage_figures(model, images, modality, lang, precision)
    batched_cached(model, inputs[:2], modality, lang)  # warm-up
    seconds, reports = min((timed(batched_cached, model, inputs, modality, lang)
                            for _ in range(REPEATS)), key=lambda outcome: outcome[0])
    # decode_steps is generate's total less the encoder's, so the stages add up.
    gflop = sum(stage["gflop"] for stage in stages.values())
    compute = sum(stage["seconds"] for stage in stages.values())
    figures = {
        "precision": precision, "stages": stages, "gflop": round(gflop, 2),
        "model_seconds": round(compute, 3), "model_gflops_per_s": round(gflop / compute, 2),
        "run_seconds": round(seconds, 3), "run_gflops_per_s": round(gflop / seconds, 2),
    }
    return figures, reports


@click.command()
@workload_options
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16-images", "bf16"]),
              default="auto",
              show_default=True, help="The precision compared with fp32.")
@click.option("--matmul-size", default=MATMUL_SIZE, show_default=True,
              help="Side of the square matmul that measures the peak.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def main(checkpoint: Path | None, modality: str, lang: str, count: int, images: Path | None,
         threads: int | None, precision: str, matmul_size: int, as_json: bool) -> None:
    """Achieved GFLOP/s of batched report writing against a matmul, fp32 and `precision`."""
    model = loaded_model(checkpoint, threads)
    device = model.device
    chosen = resolved_precision(precision, device)
    spec = get_registry().modality(modality)
    peak = {"fp32": round(matmul_gflops(torch.float32, device, matmul_size), 1)}
    # Without native bf16 one 2048² matmul takes about a minute: it is not measured.
    peak["bf16"] = (round(matmul_gflops(torch.bfloat16, device, matmul_size), 1)
                    if native_bf16(device) else None)
    with tempfile.TemporaryDirectory() as scratch:
        inputs = benchmark_inputs(images, modality, count, Path(scratch))
        tensors = [preprocess(spec, path) for path in inputs]
        runs = {"fp32": run_precision(model, inputs, tensors, modality, lang, "fp32")}
        if chosen != "fp32":
            runs[chosen] = run_precision(model, inputs, tensors, modality, lang, chosen)
        baseline = loaded_model(checkpoint, threads, lean=False)
        runs[TRAINING_NETWORKS] = run_precision(baseline, inputs, tensors, modality, lang,
                                                "fp32")
    best = max(value for value in peak.values() if value is not None)
    figures = {
        "inputs": len(inputs), "threads": torch.get_num_threads(), "device": str(device),
        "matmul_size": matmul_size,
        "native_bf16": native_bf16(device), "chosen_precision": chosen,
        "matmul_gflops_per_s": peak, "peak_gflops_per_s": best,
        "runs": {name: run for name, (run, _) in runs.items()},
    }
    for run in figures["runs"].values():
        run["model_ratio_to_peak"] = round(run["model_gflops_per_s"] / best, 4)
        run["run_ratio_to_peak"] = round(run["run_gflops_per_s"] / best, 4)
    if chosen != "fp32":
        figures["agreement"] = agreement(runs["fp32"][1], runs[chosen][1], lang)
    figures["lean_against_training_networks"] = {
        **agreement(runs[TRAINING_NETWORKS][1], runs["fp32"][1], lang),
        "model_speed_up": round(figures["runs"][TRAINING_NETWORKS]["model_seconds"]
                                / figures["runs"]["fp32"]["model_seconds"], 2)}
    if as_json:
        click.echo(json.dumps(figures))
        return
    _print(figures)


def _print(figures: dict) -> None:
    peak = figures["matmul_gflops_per_s"]
    bf16 = f"{peak['bf16']:.1f}" if peak["bf16"] is not None else "not native, not measured"
    click.echo(f"{figures['inputs']} inputs, {figures['threads']} threads, {figures['device']}; "
               f"precision chosen: {figures['chosen_precision']}")
    click.echo(f"matmul {figures['matmul_size']}²: fp32 {peak['fp32']:.1f} GFLOP/s, "
               f"bf16 {bf16}; peak {figures['peak_gflops_per_s']:.1f} GFLOP/s")
    for name, run in figures["runs"].items():
        click.echo(f"\n{name}:")
        for stage, values in run["stages"].items():
            click.echo(f"  {stage:<13} {values['gflop']:8.2f} GFLOP {values['seconds']:8.3f} s")
        click.echo(f"  model stages: {run['gflop']:.1f} GFLOP in {run['model_seconds']:.2f} s = "
                   f"{run['model_gflops_per_s']:.1f} GFLOP/s "
                   f"({100 * run['model_ratio_to_peak']:.0f}% of peak)")
        click.echo(f"  m3fm run, files to reports: {run['run_seconds']:.2f} s = "
                   f"{run['run_gflops_per_s']:.1f} GFLOP/s "
                   f"({100 * run['run_ratio_to_peak']:.0f}% of peak)")
    if "agreement" in figures:
        agree = figures["agreement"]
        click.echo(f"\n{figures['chosen_precision']} reports against fp32: {agree['identical']} "
                   f"of {agree['of']} identical, corpus BLEU-4 {agree['bleu4']}")
    lean = figures["lean_against_training_networks"]
    click.echo(f"fp32 against the training networks: {lean['identical']} of {lean['of']} "
               f"identical, corpus BLEU-4 {lean['bleu4']}; model stages "
               f"{lean['model_speed_up']:.2f}x as fast")


if __name__ == "__main__":
    main()
