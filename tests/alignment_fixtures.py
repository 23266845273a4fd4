"""A tiny synthetic COV-CTR-style data set and tiny model settings for fast alignment tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

FINDINGS = [
    ("Ground glass opacity in the right lower lobe.", "右肺下叶可见磨玻璃影。", 1),
    ("No abnormal density in both lungs.", "双肺未见异常密度影。", 0),
    ("Patchy consolidation in the left upper lobe.", "左肺上叶可见斑片状实变影。", 1),
    ("The mediastinum is centered, no enlarged lymph nodes.", "纵隔居中，未见肿大淋巴结。", 0),
]

TINY_MODEL = [
    "model.image.backbone=test_resnet",
    "model.image.input_size=32",
    "model.embed_dim=16",
    "model.text.vocab_size=200",
    "model.text.hidden_size=32",
    "model.text.num_layers=1",
    "model.text.num_heads=2",
    "model.text.intermediate_size=64",
    "model.text.max_length=48",
    "data.batch_size=4",
    "train.warmup_steps=0",
    "train.eval_every=0",
    "train.save_every=0",
]
"""`--set` overrides that shrink a shipped recipe to a model that trains in seconds."""


def write_cov_ctr(root: Path, train: int = 8, val: int = 4) -> Path:
    """A COV-CTR-format folder: each image has an English and a Chinese report."""
    images = root / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    splits: dict[str, list[dict]] = {"train": [], "val": []}
    for split, count in (("train", train), ("val", val)):
        for index in range(count):
            english, chinese, covid = FINDINGS[index % len(FINDINGS)]
            name = f"{split}-{index}.png"
            pixels = rng.integers(0, 255, size=(40, 48), dtype=np.uint8)
            Image.fromarray(pixels).save(images / name)
            for language, report in (("english", english), ("chinese", chinese)):
                splits[split].append({"id": name, "image_path": name, "report": report,
                                      "label1": language, "COVID": covid, "split": split})
    (root / "annotation.json").write_text(json.dumps(splits, ensure_ascii=False))
    return root


def tiny_overrides(*extra: str) -> list[str]:
    """`--set` arguments for the CLI: the tiny model plus `extra` key=value pairs."""
    return [arg for pair in (*TINY_MODEL, *extra) for arg in ("--set", pair)]


def run_on_two_processes(script: str, folder: Path):
    """Run the Python `script` under torchrun as two CPU processes (one thread each), from
    the tests folder; returns the finished process."""
    import os
    import subprocess
    import sys

    path = folder / "two_processes.py"
    path.write_text(script)
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(path)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"},
        cwd=Path(__file__).parent,
    )
