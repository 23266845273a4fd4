"""The generic training loop every stage runs; it knows models, batches and losses, nothing more.

A run in ``OUT`` leaves::

    OUT/metrics.jsonl                 one JSON object per log step and per evaluation
    OUT/tensorboard/                  the same scalars, when tensorboard is installed
    OUT/checkpoints/step-000120/      model.safetensors, the task's artifacts, metadata.json,
                                      training_state.pt (what resuming needs)
    OUT/checkpoints/latest            names the newest complete step checkpoint
    OUT/final/                        the last step checkpoint without its training state

``final`` is a copy rather than a rename or a link: the step checkpoint stays in place, so
``latest`` keeps pointing at something a later ``--resume`` (with a larger ``max_steps``) can
continue from, and the copy is a self-contained directory that survives being moved, uploaded
to a hub or read on a file system without links; it leaves out the optimiser state, which is
twice the size of the model and useless for inference.

One process trains in ``OUT`` at a time: rank 0 holds ``lock_directory(OUT)`` for the whole run,
so a second run on the same folder is refused at once, naming the first one's pid.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import torch

from m3fm.checkpoint import (
    CheckpointStore,
    copy_checkpoint,
    load_model_weights,
    read_metadata,
    save_model_files,
)
from m3fm.outputs import lock_directory, shown_path
from m3fm.registry.errors import M3fmError, UsageError
from m3fm.training.config import TrainConfig
from m3fm.training.distributed import Ranks
from m3fm.training.interrupt import StopRequest, TrainingInterrupted
from m3fm.training.metrics import METRICS_NAME, MetricsLog
from m3fm.training.optim import build_optimizer, build_scheduler, learning_rate_factor
from m3fm.training.progress import TrainingProgress
from m3fm.training.rng import capture_rng_state, restore_rng_state, seed_everything
from m3fm.training.runtime import Runtime, detect_runtime
from m3fm.training.state import TRAINING_STATE_NAME, TrainingState
from m3fm.training.task import TrainingTask, TrainResult

CHECKPOINTS_DIR = "checkpoints"
FINAL_DIR = "final"
SCHEDULE_SETTINGS = ("seed", "max_steps", "lr", "weight_decay", "warmup_steps")
"""The TrainConfig fields a resumed run keeps: they decide the learning-rate schedule and the
order of batches, and the restored optimiser would silently keep its old lr and weight decay."""

log = logging.getLogger(__name__)
_HELD: set[Path] = set()


class NonFiniteLossError(M3fmError):
    """The loss became NaN or infinite; the run stopped before that step changed any weight.

    Fix: lower the learning rate (``--set train.lr=...``) or look for broken images and empty
    reports in the data, then run again; ``--resume`` continues from the last checkpoint.
    """


def train(
    task: TrainingTask, config: TrainConfig, out_dir: Path, *, resume: bool = False,
    batch_settings: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Train `task.model` for `config.max_steps` optimiser steps, writing the run into `out_dir`.

    Under ``torchrun`` every rank calls this with its own shard of the data; gradients are
    averaged with DistributedDataParallel and rank 0 alone writes.  With `resume`, the run
    continues from ``out_dir/checkpoints/latest`` and ends bit-for-bit where an uninterrupted
    run would have (on CPU; CUDA kernels are not all deterministic).  So `resume` refuses a
    change to the :data:`SCHEDULE_SETTINGS` or to `batch_settings` (what else decides the
    batches, such as a recipe's ``data.batch_size``, by the name users set it with); only
    ``max_steps`` may grow, to continue a finished run.
    """
    out_dir = Path(out_dir)
    ranks = Ranks.from_environment()
    with hold_run_directory(out_dir, ranks):
        runtime = detect_runtime(config, local_rank=ranks.local_rank)
        if runtime.device.type == "cuda":
            torch.cuda.set_device(runtime.device)
        ranks.start(runtime.device)
        try:
            with StopRequest() as stop:
                run = _Run(task, config, out_dir, runtime, ranks, stop, batch_settings or {})
                return run.execute(resume=resume)
        finally:
            ranks.stop()


@contextlib.contextmanager
def hold_run_directory(out_dir: Path, ranks: Ranks) -> Iterator[None]:
    """Keep other processes out of the run folder `out_dir` while the block runs.

    Rank 0 alone takes the lock (the other ranks of a refused run stop when torchrun sees rank 0
    fail).  Re-entrant within a process, so that a recipe can hold its folder from before it
    reads its data to after :func:`train` returns.
    """
    key = Path(out_dir).resolve()
    if not ranks.is_main or key in _HELD:
        yield
        return
    with lock_directory(Path(out_dir), f"run folder {shown_path(out_dir)}"):
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)


class _Run:
    """One call of :func:`train`: the live objects and the position of the run."""

    def __init__(
        self,
        task: TrainingTask,
        config: TrainConfig,
        out_dir: Path,
        runtime: Runtime,
        ranks: Ranks,
        stop: StopRequest,
        batch_settings: Mapping[str, Any],
    ) -> None:
        self.task, self.config, self.out_dir = task, config, out_dir
        self.runtime, self.ranks, self.stop = runtime, ranks, stop
        self.batch_settings = _as_json(dict(batch_settings))
        self.store = CheckpointStore(out_dir / CHECKPOINTS_DIR)
        self.model = task.model
        self.step = self.epoch = self.batch_index = 0
        self.last_loss = math.nan
        self.metrics: dict[str, float] = {}
        self.evaluated_at: int | None = None
        self.saved_at: int | None = None
        self.log: MetricsLog | None = None
        self._epoch_batches: tuple[int, Sequence[Any]] | None = None
        self._batch_iterator: Iterator[Any] | None = None

    def execute(self, *, resume: bool) -> TrainResult:
        if not resume:
            self._refuse_existing_run()
        self.ranks.barrier()  # nobody writes before every rank has looked at out_dir
        self.model.to(self.runtime.device)
        self.optimizer = build_optimizer(self.model, self.config)
        self.scheduler = build_scheduler(self.optimizer, self.config)
        self.scaler = torch.amp.GradScaler(
            self.runtime.device.type, enabled=self.runtime.needs_loss_scaling
        )
        if not (resume and self._restore()):
            seed_everything(self.config.seed + self.ranks.rank)
        self.wrapped = self._wrap()
        if self.ranks.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            logged = (self.out_dir / METRICS_NAME).exists()  # by the run resumed or restarted
            self.log = MetricsLog(self.out_dir, resumed_step=self.step if logged else None)
        try:
            with TrainingProgress(
                max_steps=self.config.max_steps, start_step=self.step, enabled=self.ranks.is_main
            ) as progress:
                self._train_steps(progress)
            self._finish()
        finally:
            if self.log is not None:
                self.log.close()
        return TrainResult(
            step=self.step,
            loss=self.last_loss,
            metrics=self.metrics,
            checkpoint=self.out_dir / FINAL_DIR,
        )

    def _refuse_existing_run(self) -> None:
        """Never train over an earlier run's checkpoints: its log and weights would be mixed
        with ours.  A run that stopped before its first checkpoint left nothing worth keeping,
        so it is started again in place."""
        if (self.out_dir / FINAL_DIR).exists():
            state = "a finished"
        elif self.store.latest() is not None:
            state = "a started"
        else:
            if self._started():
                self._note_restart()
            return
        raise M3fmError(
            f"{self.out_dir} already holds {state} training run; pass --resume to continue it"
            " or choose another output directory"
        )

    def _started(self) -> bool:
        """Whether a run has written into `out_dir` (a log, or at least a checkpoint folder)."""
        return any((self.out_dir / name).exists() for name in (CHECKPOINTS_DIR, METRICS_NAME))

    def _note_restart(self) -> None:
        if self.ranks.is_main:
            log.warning("%s holds a run that stopped before its first checkpoint was complete; "
                        "starting it again from step 0 and replacing its log", self.out_dir)

    def _restore(self) -> bool:
        """Load the latest checkpoint: weights, optimiser, schedule, loss scale, RNG, position.

        Returns False when a run stopped before its first checkpoint: it starts again.
        """
        checkpoint = self.store.latest()
        if checkpoint is None:
            if not self._started():
                raise M3fmError(
                    f"cannot resume: no checkpoint and no training run in {self.out_dir};"
                    " train without --resume"
                )
            self._note_restart()
            return False
        metadata = read_metadata(checkpoint)
        state = TrainingState.load(checkpoint / TRAINING_STATE_NAME)
        stretched = self._refuse_changed_settings(checkpoint, metadata, state.step)
        load_model_weights(self.model, checkpoint, device=self.runtime.device)
        self.optimizer.load_state_dict(state.optimizer)
        self.scheduler.load_state_dict(state.scheduler)
        self.scaler.load_state_dict(state.grad_scaler)
        self.step, self.epoch, self.batch_index = state.step, state.epoch, state.batch_index
        self.last_loss = state.last_loss
        if stretched:
            self._follow_schedule()
        self.metrics = metadata.get("metrics", {})
        self.evaluated_at = metadata.get("evaluated_at_step")
        self.saved_at = state.step
        if len(state.rng) == self.ranks.world_size:
            restore_rng_state(state.rng[self.ranks.rank], self.runtime.device)
        else:
            seed_everything(self.config.seed + self.ranks.rank + state.step)
            warnings.warn(
                f"resuming with {self.ranks.world_size} ranks a run saved with {len(state.rng)}:"
                " it continues, but not exactly as the uninterrupted run would have",
                stacklevel=2,
            )
        if self.ranks.is_main:
            self.store.discard_after(state.step)
        return True

    def _refuse_changed_settings(self, checkpoint: Path, metadata: dict[str, Any],
                                 step: int) -> bool:
        """Refuse to resume with other settings than the checkpoint's, naming each change; but
        a larger max_steps continues a finished run (returns True: the schedule is stretched).

        Batch settings are compared only when the checkpoint recorded them.
        """
        saved_config = metadata.get("train_config", {})
        saved = {f"train.{name}": saved_config[name]
                 for name in SCHEDULE_SETTINGS if name in saved_config}
        saved |= metadata.get("batch_settings", {})
        now = {f"train.{name}": getattr(self.config, name) for name in SCHEDULE_SETTINGS}
        now |= self.batch_settings
        changed = {name: (saved[name], value) for name, value in _as_json(now).items()
                   if name in saved and saved[name] != value}
        old_steps, new_steps = changed.get("train.max_steps", (step, step))
        stretched = step == old_steps and new_steps > old_steps
        if stretched:
            del changed["train.max_steps"]
        if changed:
            listed = ", ".join(f"{name} {old} -> {new}" for name, (old, new) in changed.items())
            grow = (" (max_steps may only be raised, to continue a finished run)"
                    if "train.max_steps" in changed else "")
            raise UsageError(
                f"cannot resume {self.out_dir}: it was trained with other settings that decide"
                f" its schedule and batches: {listed}{grow}; resume with the run's settings, or"
                " train into another output directory"
            )
        if stretched and self.ranks.is_main:
            peak = learning_rate_factor(step, warmup_steps=self.config.warmup_steps,
                                        max_steps=new_steps)
            log.warning(
                "continuing %s, which finished at step %d, to max_steps=%d: the learning-rate"
                " schedule is stretched to the new length, so the rate goes back up to %.0f%%"
                " of its peak and decays again; the model will differ from one trained for"
                " %d steps from the start", checkpoint, step, new_steps, 100 * peak, new_steps)
        return stretched

    def _follow_schedule(self) -> None:
        """Set the next step's rates from the (stretched) schedule instead of the saved ones,
        which the old schedule had brought to 0."""
        scheduler = self.scheduler
        for group, base, factor in zip(self.optimizer.param_groups, scheduler.base_lrs,
                                       scheduler.lr_lambdas, strict=True):
            group["lr"] = base * factor(self.step)

    def _wrap(self) -> torch.nn.Module:
        """The model as the loss sees it: DDP across ranks, then compiled (DDP-aware)."""
        model = self.ranks.wrap(self.model, find_unused_parameters=self.task.find_unused_parameters)
        return torch.compile(model) if self.runtime.compile else model

    def _batches(self, epoch: int) -> Sequence[Any]:
        """The task's batches for `epoch`, asked for once per epoch and checked."""
        if self._epoch_batches is None or self._epoch_batches[0] != epoch:
            batches = self.task.batches(epoch)
            if not self.ranks.same_on_all_ranks(len(batches)):
                raise M3fmError(
                    f"the ranks got different numbers of batches for epoch {epoch}; the task"
                    " must give every rank the same number"
                )
            if len(batches) == 0:
                raise M3fmError(f"the task produced no batches for epoch {epoch}")
            self._epoch_batches = (epoch, batches)
        return self._epoch_batches[1]

    def _next_batch(self) -> Any:
        """The batch at (epoch, batch_index), moving to the next epoch at the end of one.

        The batches of an epoch are read through one iterator from where the run stands, so a
        task that builds them ahead (in DataLoader workers) keeps building while steps run.
        """
        while True:
            if self._batch_iterator is None:
                batches = self._batches(self.epoch)
                if self.batch_index >= len(batches):
                    self.epoch, self.batch_index = self.epoch + 1, 0
                    continue
                self._batch_iterator = _iterate(batches, self.batch_index)
            batch = next(self._batch_iterator, _END)
            if batch is not _END:
                return batch
            self._batch_iterator = None
            self.epoch, self.batch_index = self.epoch + 1, 0

    def _train_steps(self, progress: TrainingProgress) -> None:
        self.wrapped.train()
        window_start, window_steps = time.perf_counter(), 0
        while self.step < self.config.max_steps:
            batch = self._next_batch()
            lr = self.optimizer.param_groups[0]["lr"]
            loss, logs, stop = self._optimise(batch)
            self.step, self.batch_index, self.last_loss = self.step + 1, self.batch_index + 1, loss
            window_steps += 1
            progress.advance(self.step, loss)
            at_end = self.step == self.config.max_steps
            if self.log is not None and (at_end or self.step % self.config.log_every == 0):
                speed = window_steps / (time.perf_counter() - window_start)
                self._log_train(loss, lr, logs, speed)
                window_start, window_steps = time.perf_counter(), 0
            if self.task.evaluate is not None and (
                at_end or _every(self.config.eval_every, self.step)
            ):
                self._evaluate()
            if _every(self.config.save_every, self.step) and not at_end:
                self._save()
            if stop and not at_end:
                self._stop(progress)

    def _optimise(self, batch: Any) -> tuple[float, dict[str, float], bool]:
        """One optimiser step; returns the mean loss over ranks, the task's logs and whether
        any rank was asked to stop.  A non-finite loss raises before any weight changes."""
        batch = _to_device(batch, self.runtime.device)
        with self.runtime.autocast():
            loss, logs = self.task.loss(self.wrapped, batch)
        mean_loss, stop = self.ranks.reduce_step(loss, self.stop.requested)
        if not math.isfinite(mean_loss):
            self._refuse_non_finite(mean_loss)
        self.scaler.scale(loss).backward()
        if self.config.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return mean_loss, logs, stop

    def _refuse_non_finite(self, loss: float) -> NoReturn:
        latest = self.store.latest()
        kept = (
            f"the latest checkpoint is still {latest}, from before it"
            if latest is not None
            else "no checkpoint had been saved yet"
        )
        raise NonFiniteLossError(
            f"the loss became {loss} at step {self.step + 1} (epoch {self.epoch}, batch"
            f" {self.batch_index}); nothing was saved from that step and {kept}; lower lr or"
            " check the data"
        )

    def _log_train(self, loss: float, lr: float, logs: dict[str, float], speed: float) -> None:
        assert self.log is not None
        self.log.write(
            {
                **{key: float(value) for key, value in logs.items()},
                "kind": "train",
                "step": self.step,
                "epoch": self.epoch,
                "loss": loss,
                "lr": lr,
                "steps_per_s": speed,
                "wall_time": time.time(),
            }
        )

    def _evaluate(self) -> None:
        """The task's evaluation on rank 0, shared with every rank; it draws from saved and
        restored RNG, so evaluating more or less often never changes the training itself."""
        metrics: dict[str, float] = {}
        if self.ranks.is_main:
            assert self.task.evaluate is not None and self.log is not None
            rng = capture_rng_state(self.runtime.device)
            self.model.eval()
            with torch.no_grad(), self.runtime.autocast():
                metrics = {key: float(v) for key, v in self.task.evaluate(self.model).items()}
            self.model.train()
            restore_rng_state(rng, self.runtime.device)
            self.log.write(
                {
                    **metrics,
                    "kind": "eval",
                    "step": self.step,
                    "epoch": self.epoch,
                    "wall_time": time.time(),
                }
            )
        self.metrics = self.ranks.broadcast_from_main(metrics)
        self.evaluated_at = self.step

    def _save(self) -> None:
        """Checkpoint the current step: every rank contributes its RNG state, rank 0 writes."""
        rng_states = self.ranks.gather_to_main(capture_rng_state(self.runtime.device))
        if self.ranks.is_main:
            state = TrainingState(
                step=self.step,
                epoch=self.epoch,
                batch_index=self.batch_index,
                optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(),
                grad_scaler=self.scaler.state_dict(),
                rng=rng_states,
                last_loss=self.last_loss,
            )
            metadata = {
                "step": self.step,
                "epoch": self.epoch,
                "metrics": self.metrics,
                "evaluated_at_step": self.evaluated_at,
                "task": self.task.metadata,
                "train_config": self.config.model_dump(),
                "batch_settings": self.batch_settings,
                "world_size": self.ranks.world_size,
            }

            def fill(directory: Path) -> None:
                save_model_files(
                    directory, self.model, metadata=metadata, artifacts=self.task.save_artifacts
                )
                state.save(directory / TRAINING_STATE_NAME)

            self.store.save(self.step, fill)
            self.store.prune(self.config.keep_checkpoints)
        self.ranks.barrier()
        self.saved_at = self.step

    def _save_once(self) -> Path:
        """The checkpoint of the current step, saving it unless that was just done."""
        if self.saved_at != self.step:
            self._save()
        return self.store.root / self.store.name(self.step)

    def _stop(self, progress: TrainingProgress) -> NoReturn:
        cause = self.stop.signal_name or "a signal to another rank"
        progress.note(f"{cause} received: saving a checkpoint at step {self.step}")
        checkpoint = self._save_once()
        raise TrainingInterrupted(
            f"training stopped by {cause} at step {self.step}; saved {checkpoint};"
            " run again with --resume to continue"
        )

    def _finish(self) -> None:
        """Save the last step (unless done) and publish it as ``OUT/final``."""
        checkpoint = self._save_once()
        if self.ranks.is_main:
            copy_checkpoint(checkpoint, self.out_dir / FINAL_DIR, exclude=[TRAINING_STATE_NAME])
        self.ranks.barrier()


def _as_json(values: dict[str, Any]) -> dict[str, Any]:
    """`values` as metadata.json holds them (tuples as lists, paths as strings), to compare."""
    return json.loads(json.dumps(values, default=str))


_END = object()


def _iterate(batches: Sequence[Any], start: int) -> Iterator[Any]:
    """The batches from `start` on: through the sequence's own ``iterate`` when it has one
    (it builds batches ahead), else by index."""
    if hasattr(batches, "iterate"):
        return batches.iterate(start)
    return (batches[index] for index in range(start, len(batches)))


def _every(period: int, step: int) -> bool:
    """Whether a periodic action (period 0: never) falls on `step`."""
    return period > 0 and step % period == 0


def _to_device(value: Any, device: torch.device) -> Any:
    """`value` with every tensor inside it (dicts, lists, tuples, named tuples) on `device`."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, Mapping):
        return {key: _to_device(item, device) for key, item in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_to_device(item, device) for item in value))
    if isinstance(value, list | tuple):
        return type(value)(_to_device(item, device) for item in value)
    return value
