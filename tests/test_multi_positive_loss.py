"""Multi-positive contrastive loss: reports that say the same thing are not negatives."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from alignment_fixtures import run_on_two_processes, tiny_overrides, write_cov_ctr

from m3fm.alignment.config import AlignLossConfig
from m3fm.alignment.data import AlignmentPairs, meaning_id
from m3fm.alignment.losses import MASKED_LOGIT, contrastive_loss
from m3fm.registry import ConfigError, Record, get_registry

SCALE = torch.tensor(5.0)


def _embeddings(rows: int = 6, dim: int = 8, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    a = F.normalize(torch.randn(rows, dim, generator=generator), dim=-1)
    b = F.normalize(torch.randn(rows, dim, generator=generator), dim=-1)
    return a, b


def _old_loss(a, b, scale, valid=None):
    """The loss before multi-positive targets, verbatim."""
    labels = torch.arange(len(a))
    a_to_b, b_to_a = scale * a @ b.T, scale * b @ a.T
    if valid is None:
        return (F.cross_entropy(a_to_b, labels) + F.cross_entropy(b_to_a, labels)) / 2
    candidates = valid.float() > 0
    a_to_b = a_to_b.masked_fill(~candidates, MASKED_LOGIT)
    b_to_a = b_to_a.masked_fill(~candidates, MASKED_LOGIT)
    per_row = (F.cross_entropy(a_to_b, labels, reduction="none")
               + F.cross_entropy(b_to_a, labels, reduction="none")) / 2
    return torch.where(valid, per_row, 0).sum() / valid.sum().clamp(min=1)


def _reference(a, b, scale, meaning, valid, own_weight=0.0):
    """Multi-positive InfoNCE written out row by row: `own_weight` of each target on the row's
    own pair, the rest spread evenly over every row of its meaning."""
    total, rows = 0.0, 0
    for i in range(len(a)):
        if not valid[i]:
            continue
        positives = [j for j in range(len(a)) if valid[j] and meaning[j] == meaning[i]]
        for queries, keys in ((a, b), (b, a)):
            logits = torch.stack([scale * queries[i] @ keys[j]
                                  for j in range(len(a)) if valid[j]])
            columns = [j for j in range(len(a)) if valid[j]]
            log_p = logits.log_softmax(0)
            spread = -sum(log_p[columns.index(j)] for j in positives) / len(positives)
            own = -log_p[columns.index(i)]
            total += ((1 - own_weight) * spread + own_weight * own) / 2
        rows += 1
    return total / rows


def test_without_meaning_the_loss_is_bit_identical_to_the_old_one():
    a, b = _embeddings()
    valid = torch.tensor([True, False, True, True, True, False])
    assert torch.equal(contrastive_loss(a, b, SCALE), _old_loss(a, b, SCALE))
    assert torch.equal(contrastive_loss(a, b, SCALE, valid), _old_loss(a, b, SCALE, valid))


def test_distinct_meanings_give_the_one_positive_loss():
    a, b = _embeddings()
    meaning = torch.arange(6) * 1000
    assert torch.allclose(contrastive_loss(a, b, SCALE, meaning=meaning),
                          contrastive_loss(a, b, SCALE))


def test_multi_positive_loss_matches_the_written_out_formula():
    a, b = _embeddings()
    meaning = torch.tensor([7, 3, 7, 9, 3, 7])
    valid = torch.tensor([True, True, True, True, False, True])
    expected = _reference(a, b, SCALE, meaning, valid)
    assert torch.allclose(contrastive_loss(a, b, SCALE, valid, meaning), expected, atol=1e-6)
    every = torch.ones(6, dtype=torch.bool)
    assert torch.allclose(contrastive_loss(a, b, SCALE, meaning=meaning),
                          _reference(a, b, SCALE, meaning, every), atol=1e-6)


@pytest.mark.parametrize("own_weight", [0.25, 0.5, 0.9])
def test_an_own_pair_weight_keeps_that_share_of_the_target_on_the_own_pair(own_weight):
    a, b = _embeddings()
    meaning = torch.tensor([7, 3, 7, 9, 3, 7])
    valid = torch.tensor([True, True, True, True, False, True])
    expected = _reference(a, b, SCALE, meaning, valid, own_weight)
    assert torch.allclose(contrastive_loss(a, b, SCALE, valid, meaning, own_weight), expected,
                          atol=1e-6)
    assert not torch.allclose(expected, _reference(a, b, SCALE, meaning, valid), atol=1e-4)


def test_an_own_pair_weight_of_one_is_plain_infonce():
    a, b = _embeddings()
    meaning = torch.tensor([7, 3, 7, 9, 3, 7])
    assert torch.allclose(contrastive_loss(a, b, SCALE, meaning=meaning, own_weight=1.0),
                          contrastive_loss(a, b, SCALE), atol=1e-6)


def test_duplicate_reports_are_pulled_together_not_pushed_apart():
    """a = one-hot rows, so logit (i, j) in both directions is SCALE * b[j, i]: the gradient
    on b[j, i] is the push (positive) or pull (negative) between query i and report j."""
    b0 = F.normalize(torch.randn(4, 4, generator=torch.Generator().manual_seed(1)), dim=-1)
    a = torch.eye(4)
    meaning = torch.tensor([5, 6, 5, 8])  # rows 0 and 2 hold the same report
    pushes = {}
    for name, ids in (("pairs", None), ("same", meaning)):
        b = b0.clone().requires_grad_()
        contrastive_loss(a, b, SCALE, meaning=ids).backward()
        pushes[name] = b.grad[2, 0].item(), b.grad[0, 2].item(), b.grad[1, 0].item()
    assert pushes["pairs"][0] > 0 and pushes["pairs"][1] > 0  # today: pushed apart
    assert pushes["same"][0] < 0 and pushes["same"][1] < 0  # now: pulled together
    assert pushes["same"][2] > 0  # a different report stays a negative


def test_swapping_two_same_meaning_reports_leaves_the_loss_unchanged():
    a, b = _embeddings()
    meaning = torch.tensor([1, 2, 1, 3, 4, 5])
    swapped = b[[2, 1, 0, 3, 4, 5]]
    assert torch.allclose(contrastive_loss(a, b, SCALE, meaning=meaning),
                          contrastive_loss(a, swapped, SCALE, meaning=meaning))
    assert not torch.allclose(contrastive_loss(a, b, SCALE), contrastive_loss(a, swapped, SCALE))


def test_placeholders_stay_masked_with_meanings():
    a, b = _embeddings()
    meaning = torch.tensor([1, 1, 2, 1, 3, 2])
    valid = torch.tensor([True, False, True, True, True, False])
    masked = contrastive_loss(a, b, SCALE, valid, meaning)
    assert torch.allclose(masked, contrastive_loss(a[valid], b[valid], SCALE,
                                                   meaning=meaning[valid]))
    a = a.clone().requires_grad_()
    nothing = contrastive_loss(a, b, SCALE, torch.zeros(6, dtype=torch.bool), meaning)
    nothing.backward()
    assert nothing.item() == 0 and torch.isfinite(a.grad).all()


def test_meaning_must_have_one_id_per_row():
    a, b = _embeddings()
    with pytest.raises(ValueError, match="meaning has shape"):
        contrastive_loss(a, b, SCALE, meaning=torch.zeros(5, dtype=torch.int64))


def test_meaning_ids_are_stable_across_processes():
    text = "Ground glass opacity in the right lower lobe."
    extract = get_registry().language("en").extract_findings
    here = [meaning_id(text, "same-text"), meaning_id(text, "same-findings", extract)]
    script = ("from m3fm.alignment.data import meaning_id;"
              "from m3fm.registry import get_registry;"
              "e = get_registry().language('en').extract_findings;"
              f"print(meaning_id({text!r}, 'same-text'), meaning_id({text!r}, 'same-findings', e))")
    seed = str(int(os.environ.get("PYTHONHASHSEED", "0") or 0) + 1)  # unlike ours
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout
    assert [int(value) for value in out.split()] == here
    assert here[0] == 627428400459292880  # a resumed run of a later version agrees too
    assert all(0 <= value < 2**63 for value in here)
    assert meaning_id(text, "pairs") is None


def test_same_findings_groups_differently_worded_reports():
    language = get_registry().language("en")
    normalized = [language.normalize(text) for text in (
        "Ground glass opacity in both lower lobes.",
        "Both lower lobes show ground-glass opacities.",
        "Heart size is normal. The lungs are clear.",
        "No acute cardiopulmonary abnormality.",  # no findings: falls back to the text
    )]
    first, second, normal, nothing = normalized
    assert language.extract_findings(first) and not language.extract_findings(nothing)
    ids = {text: meaning_id(text, "same-findings", language.extract_findings)
           for text in normalized}
    assert ids[first] == ids[second] != ids[normal]
    assert ids[nothing] == meaning_id(nothing, "same-text") != ids[normal]
    assert meaning_id(first, "same-text") != meaning_id(second, "same-text")
    # A language without an extractor falls back to the text.
    assert meaning_id(first, "same-findings", None) == meaning_id(first, "same-text")


def test_pairs_carry_meanings_and_parallel_pairs_take_the_anchors(tmp_path):
    from PIL import Image

    image = tmp_path / "slice.png"
    Image.linear_gradient("L").save(image)
    common = {"dataset": "toy", "split": "train", "source": "toy", "modality": "ct"}
    reports = [("Ground glass opacity in both lower lobes.", "双肺下叶磨玻璃影。"),
               ("Both lower lobes show ground-glass opacities.", "双肺下叶见磨玻璃密度影。"),
               ("No pleural effusion.", "未见胸腔积液。")]
    records = []
    for index, (english, chinese) in enumerate(reports):
        records += [
            Record(id=f"{index}", image=image, language="en", report=english,
                   group=f"g{index}", **common),
            Record(id=f"{index}zh", image=image, language="zh", report=chinese,
                   group=f"g{index}", **common),
        ]
    args = {"split": "train", "modalities": ["ct"], "languages": ["en", "zh"]}
    plain = AlignmentPairs.from_records(records, **args)
    assert all(p.meaning is None for p in plain.image_reports + plain.parallel)
    by_findings = AlignmentPairs.from_records(records, **args, positives="same-findings")
    by_text = AlignmentPairs.from_records(records, **args, positives="same-text")
    for pairs in (by_findings, by_text):
        anchors = {p.text: p.meaning for p in pairs.image_reports}
        assert all(p.meaning == anchors[p.anchor] for p in pairs.parallel)
    meanings = [p.meaning for p in by_findings.image_reports]
    assert meanings[0] == meanings[1] != meanings[2]
    assert len({p.meaning for p in by_text.image_reports}) == 3


def test_positives_is_a_validated_loss_field():
    # `pairs` won the controlled comparison on COV-CTR val (docs/training.md).
    assert AlignLossConfig().positives == "pairs"
    assert AlignLossConfig(positives="same-findings").positives == "same-findings"
    from m3fm.recipes import load_recipe

    with pytest.raises(ConfigError, match=r"loss\.positives: Input should be 'pairs'"):
        load_recipe("cov-ctr-align", {"loss.positives": "same-image"})
    with pytest.raises(ConfigError, match=r"loss\.own_pair_weight: Input should be less"):
        load_recipe("cov-ctr-align", {"loss.own_pair_weight": "1.5"})


def test_an_alignment_step_trains_with_repeated_reports(tmp_path):
    from m3fm.alignment.task import AlignmentTask
    from m3fm.recipes import load_recipe

    data = write_cov_ctr(tmp_path / "data")
    overrides = dict(pair.split("=", 1) for pair in tiny_overrides(
        "data.workers=0", "data.batch_size=8", "loss.positives=same-findings",
        "loss.own_pair_weight=0.5")[1::2])
    task = AlignmentTask(load_recipe("cov-ctr-align", overrides), data)
    batch = task.batches(0)[0]
    # Eight images, four distinct reports: each report twice in the batch.
    assert batch.meaning.dtype == torch.int64 and len(batch.meaning.unique()) == 4
    assert batch.parallel_meaning is not None and len(batch.parallel_meaning.unique()) == 4
    total, logs = task.loss(task.model, batch)
    total.backward()
    assert torch.isfinite(total) and "loss_pivot" in logs
    assert all(torch.isfinite(p.grad).all() for p in task.model.parameters()
               if p.grad is not None)


DDP_SCRIPT = textwrap.dedent("""
    import torch, torch.distributed as dist
    import torch.nn.functional as F
    from m3fm.alignment.losses import contrastive_loss

    torch.manual_seed(0)
    a = torch.randn(8, 6, requires_grad=True)
    b = torch.randn(8, 6)
    meaning = torch.tensor([1, 2, 3, 1, 2, 9, 1, 4])  # duplicates within and across ranks
    scale = torch.tensor(5.0)
    full = contrastive_loss(F.normalize(a, dim=-1), F.normalize(b, dim=-1), scale,
                            meaning=meaning)
    full.backward()
    full_grad = a.grad.clone()

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    rows = slice(rank * 4, (rank + 1) * 4)
    local_a = a.detach()[rows].clone().requires_grad_()
    local = contrastive_loss(F.normalize(local_a, dim=-1), F.normalize(b[rows], dim=-1), scale,
                             meaning=meaning[rows])
    local.backward()
    losses = [torch.zeros(1) for _ in range(world)]
    dist.all_gather(losses, local.detach().reshape(1))
    grads = [torch.zeros_like(local_a) for _ in range(world)]
    dist.all_gather(grads, local_a.grad / world)
    # Placeholders on one rank only: both ranks still make the same collectives.
    valid = torch.tensor([True, False, True, True]) if rank == 0 else None
    for ids in (None, meaning[rows]):
        masked = contrastive_loss(F.normalize(local_a, dim=-1), F.normalize(b[rows], dim=-1),
                                  scale, valid, ids)
        assert torch.isfinite(masked)
    if rank == 0:
        assert torch.allclose(torch.cat(losses).mean(), full.detach(), atol=1e-6)
        assert torch.allclose(torch.cat(grads), full_grad, atol=1e-6), "gradients differ"
        print("ddp-multi-positive-ok")
    dist.destroy_process_group()
""")


@pytest.mark.slow
def test_distributed_multi_positive_loss_equals_the_full_batch_loss(tmp_path):
    result = run_on_two_processes(DDP_SCRIPT, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ddp-multi-positive-ok" in result.stdout
