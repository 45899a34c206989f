"""The trainer core: optimizer, schedule, EMA, DDP, the step with its fault handling, epochs,
resume state, best/last weights and reporting. It knows nothing of classification: a task
(effnet.tasks) turns batches into a loss and metrics.

Bitwise resume rests on three things: (1) deterministic sampling (training.sampling); (2) every
random augmentation seeded per sample; (3) everything else that evolves (model, optimizer,
schedule, EMA, the global RNG used by dropout and stochastic depth, the position in the epoch)
is in the resume state, written atomically after a whole optimizer step.
"""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from dataclasses import dataclass

import torch
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from effnet.core.errors import EffnetWarning, RunError
from effnet.core.fileio import atomic_write, write_failure_is_run_error
from effnet.core.machine import machine
from effnet.datasets.loading import ordered_loader
from effnet.models.config import ModelConfig
from effnet.models.flops import count_macs
from effnet.training.checkpoint import load_state, rng_state, save_state, set_rng_state
from effnet.training.compiled import CompiledOrEager
from effnet.training.config import TrainConfig
from effnet.training.distributed import Dist, barrier, finite_everywhere, sum_over_ranks
from effnet.training.finetune import apply_finetune, frozen_pairs, merged
from effnet.training.precision import autocast, keep_depthwise_fp32, resolve_precision
from effnet.training.recipe import build_optimizer, lr_lambda, tf_ema_multi_avg_fn
from effnet.training.report import EpochReporter
from effnet.training.rundir import CONFIG_FILE, STATE_FILE, RunDir
from effnet.training.sampling import SeededAugment, epoch_loader
from effnet.weights.io import save

MAX_BAD_STEPS = 10


class TrainingError(RunError):
    """Training cannot go on (diverged, non-finite weights); the message says why."""


@dataclass(frozen=True)
class StepPlan:
    batch_size: int  # per process, per micro-batch
    micro_per_epoch: int
    steps_per_epoch: int
    accum: int = 1
    world: int = 1

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.accum * self.world


def plan_steps(n_train: int, world: int, batch_size: int, accum_steps: int) -> StepPlan:
    """Batches per epoch for this many images; a training set smaller than one step gets a
    smaller batch (with a warning) rather than a refusal."""
    per_rank = n_train // world
    if per_rank < batch_size * accum_steps:
        smaller = max(1, per_rank // accum_steps)
        if per_rank < accum_steps:
            raise TrainingError(
                f"{n_train} training images cannot fill {accum_steps} accumulation steps on {world} processes"
            )
        warnings.warn(
            f"{n_train} training images are fewer than one step of {batch_size} x {accum_steps} x {world} "
            f"processes; training with batch size {smaller}",
            EffnetWarning,
            stacklevel=3,
        )
        batch_size = smaller
    micro = per_rank // batch_size
    return StepPlan(batch_size, micro, micro // accum_steps, accum_steps, world)


def _bn_buffers(model: torch.nn.Module) -> list[torch.Tensor]:
    return [b for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for b in m.buffers()]


def _to_device(inputs, device: torch.device, fmt):
    """A batch tensor, or a list of differently sized images (detection), on ``device``."""
    if isinstance(inputs, list | tuple):
        return [x.to(device) for x in inputs]
    return inputs.to(device, memory_format=fmt)


def _all_finite(model: torch.nn.Module) -> bool:
    return all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point())


class Trainer:
    """Trains ``model`` on ``train_set`` for ``task``, validating on ``val_set`` every epoch.

    ``criterion(outputs, targets, inputs, extras)`` replaces the task's loss when given (e.g.
    distillation). ``on_start`` callbacks write extra files into a new run before its first
    state, so a run that exists is complete. ``epoch_setup(epoch)`` (progressive learning) sets
    the epoch's image size and regularization before its loader starts and returns what to
    record in its metrics row; it must depend on the epoch alone, or resume would not be exact.
    ``notes`` join RUN/runtime.json, the record of how this start of the run trains (precision,
    input pipeline, machine)."""

    # Counters and history that, with the modules' state dicts and the RNG, define the run.
    _PROGRESS = ("epoch", "step_in_epoch", "global_step", "best_score", "rows", "bad_in_a_row", "skipped_steps",
                 "epoch_sums")  # fmt: skip

    def __init__(
        self,
        cfg: TrainConfig,
        rundir: RunDir,
        *,
        task,
        model: torch.nn.Module,
        train_set: SeededAugment,
        val_set,
        plan: StepPlan,
        ranks: Dist,
        device: torch.device,
        resume: bool,
        quiet: bool = False,
        criterion=None,
        on_start=(),
        epoch_setup=None,
        callbacks=(),
        notes=None,
    ):
        self.cfg, self.rundir, self.run, self.task = cfg, rundir, rundir.path, task
        self.model, self.train_set, self.val_set, self.plan = model, train_set, val_set, plan
        self.dist, self.device, self.quiet = ranks, device, quiet
        self.criterion = criterion or (lambda outputs, targets, inputs, extras: task.loss(outputs, targets))
        self.micro_per_epoch, self.steps_per_epoch = plan.micro_per_epoch, plan.steps_per_epoch
        self.epoch_setup, self.epoch_settings = epoch_setup, {}
        self.callbacks = tuple(callbacks)  # each gets every epoch's row, on the main process

        # Before the optimizer and DDP, which both take only the parameters that still train.
        self.finetune = apply_finetune(self.model, cfg.finetune)
        self.optimizer = build_optimizer(self.model, cfg, cfg.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg, self.steps_per_epoch))
        self.ema = (
            AveragedModel(self.model, multi_avg_fn=tf_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
            if cfg.ema_decay
            else None
        )
        self._ema_frozen = frozen_pairs(self.model, self.ema.module, self.finetune) if self.ema else []
        if ranks.main and not quiet:
            print(self.finetune.describe(), file=sys.stderr, flush=True)
        self.precision, why = resolve_precision(cfg.precision, device, cfg.task, self._gmacs_per_step())
        if self.precision == "bf16" and device.type == "cpu":
            keep_depthwise_fp32(self.model)
        self.net = self.model
        if ranks.world > 1:
            ids = [device.index] if device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if cfg.compile:
            self.net = CompiledOrEager(self.net)
        runtime = {"precision": self.precision, "precision_reason": why, "compile": cfg.compile,
                   "channels_last": cfg.channels_last, **(notes or {}), "machine": machine()}  # fmt: skip
        if ranks.main:
            on_start = (*on_start, lambda rd: rd.write_json("runtime.json", runtime))
            if resume:  # this start's record; a new run writes it with its other first files
                with write_failure_is_run_error(self.run / "runtime.json"):
                    rundir.write_json("runtime.json", runtime)

        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.best_score, self.rows, self.bad_in_a_row, self.skipped_steps = -math.inf, [], 0, 0
        self.epoch_sums = {"loss": 0.0}  # this epoch so far: summed loss x images and the task's counts
        if resume:
            self._load(load_state(self.run))
        elif ranks.main:
            with write_failure_is_run_error(self.run):
                for write in on_start:
                    write(rundir)
            self._save_state()  # a run killed before its first checkpoint can still resume
            with write_failure_is_run_error(self.run / CONFIG_FILE):
                rundir.write_config(cfg.to_dict(nested=True))  # last: from here on the folder is a run

    def _gmacs_per_step(self) -> float | None:
        """Multiply-adds of one training micro-batch's forward pass, for ``--precision auto``; None
        for a module that is not an EfficientNet classifier (its size is unknown)."""
        config = getattr(self.model, "config", None)
        if self.cfg.precision != "auto" or self.cfg.task != "classification" or not isinstance(config, ModelConfig):
            return None  # a task model, or a module of the user's own

        return count_macs(config, self.cfg.image_size or config.resolution) * self.plan.batch_size / 1e9

    @property
    def best_top1(self) -> float:
        return self.best_score

    # --- state ---------------------------------------------------------------------------------

    def _state(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "rng": rng_state(),
            **{key: getattr(self, key) for key in self._PROGRESS},
        }

    def _save_state(self) -> None:
        if not _all_finite(self.model):
            raise TrainingError("refusing to save non-finite weights")
        with write_failure_is_run_error(self.run / STATE_FILE):  # the previous state stays as it was
            save_state(self.run, self._state())

    def _load(self, state: dict) -> None:
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if self.ema:
                self.ema.load_state_dict(state["ema"])
            set_rng_state(state["rng"])
            if "best_top1" in state:  # written before the trainer core knew tasks
                loss, correct, seen = state["epoch_sums"]
                state = {**state, "best_score": state["best_top1"], "epoch_sums": {"loss": loss, "correct": correct,
                                                                                   "n": seen}}  # fmt: skip
            progress = {key: state[key] for key in self._PROGRESS}
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise TrainingError(f"{self.run / 'state.pt'}: a resume state that does not fit this run ({exc})") from None
        for key, value in progress.items():
            setattr(self, key, value)

    def _save_weights(self, name: str, module: torch.nn.Module) -> None:
        module = merged(module)  # LoRA's factors folded into the weights they update: a plain file
        if not _all_finite(module):
            raise TrainingError(f"refusing to save non-finite weights to {name}")
        training = {"training": json.dumps(self.cfg.to_dict())}
        with write_failure_is_run_error(self.run / name):
            if hasattr(module, "config") and hasattr(module, "preprocessing"):
                save(module, self.run / name, extra_metadata=training)
            else:  # a module of the user's own (effnet.fit): its tensors, no effnet metadata to rebuild it
                from safetensors.torch import save as to_bytes

                tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
                atomic_write(self.run / name, lambda f: f.write(to_bytes(tensors, metadata=training)))

    def best_state(self) -> dict[str, torch.Tensor] | None:
        """The tensors of best.safetensors (the best epoch's model, or its EMA), if one was saved."""
        from safetensors.torch import load_file

        path = self.run / "best.safetensors"
        return load_file(str(path)) if path.is_file() else None

    # --- the loop ------------------------------------------------------------------------------

    def _train_step(self, micro_batches) -> tuple[float, dict] | None:
        """One optimizer step over ``accum_steps`` micro-batches; None if it was skipped."""
        snapshot = [b.clone() for b in _bn_buffers(self.model)]
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum, counts = 0.0, {}
        fmt = torch.channels_last if self.cfg.channels_last else torch.preserve_format
        ok = True
        for batch in micro_batches:
            inputs, targets, extras = self.task.split_batch(batch)
            inputs = _to_device(inputs, self.device, fmt)
            targets = self.task.to_device(targets, self.device)
            with autocast(self.precision, self.device):
                outputs = self.task.forward(self.net, inputs, targets)
            loss = self.criterion(outputs, targets, inputs, extras)
            if not finite_everywhere(loss.detach(), self.dist, self.device):
                ok = False
                break
            (loss / self.cfg.accum_steps).backward()
            batch_counts = self.task.train_counts(outputs, targets)
            loss_sum += loss.item() * batch_counts["n"]
            counts = {k: counts.get(k, 0) + v for k, v in batch_counts.items()}
        if ok:
            max_norm = self.cfg.clip_grad or math.inf
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
            ok = finite_everywhere(norm, self.dist, self.device)
        if not ok:
            # Undo what the forward pass did to the BN running statistics; weights untouched.
            for buffer, saved in zip(_bn_buffers(self.model), snapshot, strict=True):
                buffer.copy_(saved)
            self.optimizer.zero_grad(set_to_none=True)
            return None
        self.optimizer.step()
        self.scheduler.step()
        if self.ema:
            self.ema.update_parameters(self.model)
            with torch.no_grad():  # averaging a constant moves it by rounding: frozen tensors stay to the bit
                for averaged, own in self._ema_frozen:
                    averaged.copy_(own)
        return loss_sum, counts

    def fit(self) -> dict:
        reporter = EpochReporter(self.run, self.cfg.epochs, self.quiet, self.task.val_keys) if self.dist.main else None
        try:
            while self.epoch < self.cfg.epochs:
                self._run_epoch(reporter)
        finally:
            if reporter:
                reporter.close()
        return self.rows[-1] if self.rows else {}

    def _run_epoch(self, reporter) -> None:
        cfg = self.cfg
        self.net.train()  # evaluation at the end of the last epoch left it in eval mode
        self.finetune.hold_frozen()  # but frozen parts stay in eval mode: their BN statistics do not move
        if self.epoch_setup is not None:
            self.epoch_settings = self.epoch_setup(self.epoch)
        start = time.perf_counter()
        loader = epoch_loader(
            self.train_set,
            seed=cfg.seed,
            epoch=self.epoch,
            rank=self.dist.rank,
            world=self.dist.world,
            batch_size=self.plan.batch_size,
            batches=self.micro_per_epoch,
            start_batch=self.step_in_epoch * cfg.accum_steps,
            workers=cfg.workers,
            with_index=getattr(self.criterion, "needs_index", False),
            collate_fn=getattr(self.task, "collate", None),
        )
        batches = iter(loader)
        bar = tqdm(
            total=self.steps_per_epoch,
            initial=self.step_in_epoch,
            desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
            unit="step",
            disable=self.quiet or not self.dist.main or not sys.stderr.isatty(),
        )
        if self.step_in_epoch == 0:
            self.epoch_sums = {"loss": 0.0}
        seen_here = 0
        while self.step_in_epoch < self.steps_per_epoch:
            result = self._train_step([next(batches) for _ in range(cfg.accum_steps)])
            self.step_in_epoch += 1
            if result is None:
                self.bad_in_a_row += 1
                self.skipped_steps += 1
                if self.bad_in_a_row >= MAX_BAD_STEPS:
                    raise TrainingError(
                        f"{MAX_BAD_STEPS} steps in a row had a non-finite loss or gradient (epoch {self.epoch + 1}, "
                        f"step {self.step_in_epoch}); lower --lr, add --clip-grad, or check the data"
                    )
            else:
                loss_sum, counts = result
                self.bad_in_a_row = 0
                self.global_step += 1
                sums = self.epoch_sums
                self.epoch_sums = {
                    "loss": sums["loss"] + loss_sum,
                    **{k: sums.get(k, 0) + v for k, v in counts.items()},
                }
                seen_here += counts["n"]
                rate = seen_here * self.dist.world / max(1e-9, time.perf_counter() - start)
                bar.set_postfix(loss=f"{loss_sum / max(1, counts['n']):.3f}", img_s=f"{rate:.0f}")
            bar.update(1)
            if cfg.checkpoint_every and self.step_in_epoch % cfg.checkpoint_every == 0 and self.dist.main:
                if self.step_in_epoch < self.steps_per_epoch:
                    self._save_state()
        bar.close()
        self._end_epoch(seen_here, time.perf_counter() - start, reporter)

    @torch.inference_mode()
    def validate(self, module: torch.nn.Module) -> dict:
        module.eval()
        metrics = self.task.metrics()
        fmt = torch.channels_last if self.cfg.channels_last else torch.preserve_format
        batch_size = max(self.task.val_batch, self.plan.batch_size)
        collate = getattr(self.task, "collate", None)
        for batch in ordered_loader(self.val_set, batch_size, self.cfg.workers, collate_fn=collate):
            inputs, targets, _ = self.task.split_batch(batch)
            with autocast(self.precision, self.device):
                outputs = module(_to_device(inputs, self.device, fmt))
            metrics.update(outputs, targets)
        return metrics.summary()

    def _end_epoch(self, seen_here: int, seconds: float, reporter) -> None:
        keys = sorted(self.epoch_sums)
        totals = dict(zip(keys, sum_over_ranks([self.epoch_sums[k] for k in keys], self.dist, self.device),
                          strict=True))  # fmt: skip
        judged = self.ema.module if self.ema else self.model
        metrics = self.validate(judged) if self.dist.main else {}
        seen = max(1, totals.get("n", 0))
        row = {
            "epoch": self.epoch + 1,
            "step": self.global_step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": totals["loss"] / seen,
            **self.task.train_summary(totals),
            "val_loss": metrics.get("loss"),
            **{f"val_{k}": metrics.get(k) for k in self.task.val_keys},
            "skipped_steps": self.skipped_steps,
            "epoch_seconds": round(seconds, 2),
            "images_per_second": round(seen_here * self.dist.world / max(seconds, 1e-9), 1),
            **self.finetune.summary(),
            **self.epoch_settings,
        }
        if self.dist.main:
            # Detectors and embedders report no validation loss; their score must be finite then.
            judge = metrics["loss"] if metrics.get("loss") is not None else metrics["score"]
            if not math.isfinite(judge):
                # The weights are finite (or saving them would have failed) but the outputs are
                # not: the model diverged. Keep the last good state and weights as they are.
                kept = f"best.safetensors is from epoch {self._best_epoch()}" if self.rows else "no weights were saved"
                raise TrainingError(
                    f"epoch {self.epoch + 1}: the validation loss is {judge}: the model diverged "
                    f"(lower --lr or add --clip-grad); {kept}"
                )
        self.rows.append(row)
        self.epoch += 1
        self.step_in_epoch = 0
        if self.dist.main:
            # An epoch whose every step was skipped (non-finite) did not train: never its "best".
            if totals.get("n", 0) > 0 and metrics["score"] > self.best_score:
                self.best_score = metrics["score"]
                self._save_weights("best.safetensors", judged)
            self._save_weights("last.safetensors", self.model)
            reporter.epoch(self.rows)
            self._save_state()
            for callback in self.callbacks:
                callback(dict(row))
        barrier(self.dist)

    def _best_epoch(self) -> int:
        return max(self.rows, key=lambda r: r.get(f"val_{self.task.val_keys[0]}") or -1)["epoch"]
