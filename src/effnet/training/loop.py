"""The training loop: one process or many (torchrun), resumable to the bit.

Bitwise resume rests on three things: (1) the sample order of an epoch is a permutation drawn
from (seed, epoch) alone; (2) each sample's augmentation is seeded from (seed, epoch, index), so
it does not depend on which worker or which run produced it; (3) everything else that evolves
(model, optimizer, schedule, EMA, the global RNG used by dropout and stochastic depth, the
position in the epoch) is in the resume state, written atomically after a whole optimizer step.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel

from effnet.datasets import ImageDataset, load_data
from effnet.datasets.transforms import eval_transform, train_transform
from effnet.errors import UsageError
from effnet.fileio import atomic_write
from effnet.preprocessing import Preprocessing
from effnet.registry import build_model, create_model
from effnet.training.checkpoint import load_state, rng_state, save_state, set_rng_state
from effnet.training.evaluate import evaluate
from effnet.training.recipe import BASE_LR, TrainConfig, build_optimizer, lr_lambda, tf_ema_avg_fn
from effnet.training.report import plot_curves, write_metrics_csv
from effnet.weights import save

MAX_BAD_STEPS = 10
TEACHER_LOGITS = "teacher_logits.safetensors"


class TrainingError(RuntimeError):
    """Training cannot go on (diverged, non-finite weights); the message says why."""

    exit_code = 1


class WithIndex(torch.utils.data.Dataset):
    """(image, label, index): lets a batch find its rows in the cached teacher logits."""

    def __init__(self, base):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        return (*self.base[index], index)


class SeededAugment(torch.utils.data.Dataset):
    """Each sample's random augmentation is seeded by (seed, epoch, index)."""

    def __init__(self, base: ImageDataset, seed: int):
        self.base, self.seed, self.epoch = base, seed, 0

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index) % (2**63))
            return self.base[index]


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Dist:
    """torchrun sets RANK/WORLD_SIZE; without them this is a single process."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: CUDA is not available on this machine")
        device = torch.device(name if ":" in name else f"cuda:{local_rank}")
        torch.cuda.set_device(device)
        return device
    if name != "cpu":
        raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
    return torch.device("cpu")


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def _bn_buffers(model: torch.nn.Module) -> list[torch.Tensor]:
    return [b for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for b in m.buffers()]


def _all_finite(model: torch.nn.Module) -> bool:
    return all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point())


class Trainer:
    def __init__(self, cfg: TrainConfig, run: str | os.PathLike, *, resume: bool = False, quiet: bool = False):
        self.cfg, self.run, self.quiet = cfg, Path(run), quiet
        self.dist = setup_distributed()
        self.device = resolve_device(cfg.device, self.dist.local_rank)
        self._check_run_dir(resume)
        torch.manual_seed(cfg.seed)

        self.data = load_data(
            cfg.data,
            data_dir=cfg.data_dir,
            val_split=cfg.val_split,
            seed=cfg.seed,
            limit_train=cfg.limit_train,
            bad_images=cfg.bad_images,
            progress=not quiet and self.dist.main,
        )
        classes = self.data.classes
        initial = None
        if cfg.weights:
            from effnet.predict import load_for_inference

            initial = load_for_inference(cfg.weights)
        # Fine-tuned weights keep the padding and BN eps they were trained with.
        arch = {"padding": initial.config.padding, "bn_eps": initial.config.bn_eps} if initial else {}
        if cfg.model is None and cfg.phi is None:
            # The file's own architecture (a pruned model's exists only there), this run's head
            # and regularisation.
            source = initial.config
            config = replace(
                source,
                num_classes=len(classes),
                resolution=cfg.image_size or source.resolution,
                dropout=source.dropout if cfg.dropout is None else cfg.dropout,
                drop_path_rate=cfg.drop_path_rate,
                bn_momentum=cfg.bn_momentum,
            )
            self.model = build_model(config, class_names=classes)
        else:
            self.model = create_model(
                cfg.model,
                phi=cfg.phi,
                width=cfg.width,
                depth=cfg.depth,
                num_classes=len(classes),
                resolution=cfg.image_size,
                dropout=cfg.dropout,
                drop_path_rate=cfg.drop_path_rate,
                bn_momentum=cfg.bn_momentum,
                class_names=classes,
                **arch,
            )
        if initial is not None:
            self._load_initial_weights(initial, cfg.weights)
        size = self.model.config.resolution
        pre = self.model.preprocessing
        # What the eval transform below does, so that predict/eval preprocess like validation.
        self.model.preprocessing = Preprocessing(resolution=size, resize=size, mean=pre.mean, std=pre.std)
        self.model = self.model.to(self.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.model.set_memory_efficient(cfg.memory_efficient)
        self.teacher = self._load_teacher(cfg.teacher) if cfg.teacher else None

        train_set = ImageDataset(self.data.split("train"), train_transform(size, pre.mean, pre.std, cfg.augment))
        self.train_set = SeededAugment(train_set, cfg.seed)
        self.val_set = ImageDataset(self.data.split("val"), eval_transform(size, pre.mean, pre.std))
        self.teacher_logits = self._cached_teacher_logits(train_set, resume) if cfg.cache_teacher else None
        per_rank = len(self.train_set) // self.dist.world
        self.micro_per_epoch = per_rank // cfg.batch_size
        self.steps_per_epoch = self.micro_per_epoch // cfg.accum_steps
        if self.steps_per_epoch < 1:
            raise UsageError(
                f"{len(self.train_set)} training images are fewer than one step of "
                f"{cfg.batch_size} x {cfg.accum_steps} x {self.dist.world} processes"
            )

        global_batch = cfg.batch_size * cfg.accum_steps * self.dist.world
        self.lr = cfg.lr or BASE_LR[cfg.opt] * global_batch / 256
        self.optimizer = build_optimizer(self.model, cfg, self.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg, self.steps_per_epoch))
        self.ema = (
            AveragedModel(self.model, avg_fn=tf_ema_avg_fn(cfg.ema_decay), use_buffers=True) if cfg.ema_decay else None
        )
        self.net = self.model
        if self.dist.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)

        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.best_top1, self.rows, self.bad_in_a_row, self.skipped_steps = -1.0, [], 0, 0
        self.epoch_sums = [0.0, 0, 0]  # loss x images, correct, images: this epoch so far
        if resume:
            self._load(load_state(self.run))
        elif self.dist.main:
            self._start_run_dir()

    # --- run directory and state -------------------------------------------------------------

    def _start_run_dir(self) -> None:
        """Written only once everything above has worked, so a failed start leaves nothing."""
        text = json.dumps(self.cfg.to_dict(), indent=2).encode()
        atomic_write(self.run / "config.json", lambda f: f.write(text))
        if self.data.skipped:
            report = json.dumps(self.data.skipped, indent=2).encode()
            atomic_write(self.run / "skipped_images.json", lambda f: f.write(report))
            first = self.data.skipped[0]
            print(
                f"effnet: skipping {len(self.data.skipped)} unusable images (first: {first['path']}: "
                f"{first['reason']}); the list is in {self.run / 'skipped_images.json'}",
                file=sys.stderr,
            )
        if self.teacher_logits is not None:
            self._write_teacher_logits(self.teacher_logits)
        self._save_state()  # a run killed before its first checkpoint can still resume

    def _load_initial_weights(self, initial: torch.nn.Module, weights: str) -> None:
        """Fine-tuning: take every tensor from ``initial`` but a classifier of another shape."""
        from effnet.weights import load_weights

        source = initial.state_dict()
        own = self.model.state_dict()
        for key in ("classifier.weight", "classifier.bias"):
            if key in source and key in own and source[key].shape != own[key].shape:
                source[key] = own[key]  # new classes: keep the fresh classifier
        load_weights(self.model, source, origin=f"--weights {weights}")

    def _check_run_dir(self, resume: bool) -> None:
        config_path = self.run / "config.json"
        if resume:
            if not config_path.is_file():
                raise UsageError(f"{self.run}: nothing to resume (no config.json)")
            # Through from_dict: a run saved before a setting existed resumes with its default.
            saved = TrainConfig.from_dict(json.loads(config_path.read_text())).to_dict()
            if saved != self.cfg.to_dict():
                diff = sorted(k for k in saved if saved[k] != self.cfg.to_dict()[k])
                raise UsageError(f"--resume with settings that differ from {config_path}: {', '.join(diff)}")
            return
        if self.dist.main and config_path.exists():
            raise UsageError(f"{self.run} already holds a run; use --resume to continue it or another --out")

    # Counters and history that, with the modules' state dicts and the RNG, define the run.
    _PROGRESS = ("epoch", "step_in_epoch", "global_step", "best_top1", "rows", "bad_in_a_row", "skipped_steps",
                 "epoch_sums")  # fmt: skip

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
        save_state(self.run, self._state())

    def _load(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema:
            self.ema.load_state_dict(state["ema"])
        set_rng_state(state["rng"])
        for key in self._PROGRESS:
            setattr(self, key, state[key])

    def _save_weights(self, name: str, module: torch.nn.Module) -> None:
        if not _all_finite(module):
            raise TrainingError(f"refusing to save non-finite weights to {name}")
        save(module, self.run / name, extra_metadata={"training": json.dumps(self.cfg.to_dict())})

    # --- the loop ------------------------------------------------------------------------------

    def _loader(self, epoch: int, start_micro: int):
        order = epoch_order(len(self.train_set), self.cfg.seed, epoch)
        mine = order[self.dist.rank :: self.dist.world][: self.micro_per_epoch * self.cfg.batch_size]
        self.train_set.epoch = epoch
        return torch.utils.data.DataLoader(
            self.train_set if self.teacher_logits is None else WithIndex(self.train_set),
            batch_size=self.cfg.batch_size,
            sampler=mine[start_micro * self.cfg.batch_size :].tolist(),
            num_workers=self.cfg.workers,
            drop_last=True,
            # Its own generator: otherwise creating the iterator draws a worker seed from the global
            # RNG, and a resumed run (iterator created mid-epoch) would shift dropout's random stream.
            generator=torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch),
        )

    def _forward_loss(self, images, labels, index=None):
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.amp == "bf16"):
            logits = self.net(images)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.cfg.label_smoothing)
        if self.teacher is not None:
            soft = self.teacher(images) if index is None else self.teacher_logits[index.to(self.device)]
            loss = distillation_loss(logits.float(), soft, loss, self.cfg.kd_temperature, self.cfg.kd_alpha)
        return logits, loss

    def _cached_teacher_logits(self, train_set: ImageDataset, resume: bool) -> torch.Tensor:
        """The teacher's logits for every training image in index order: read back from the run
        when resuming, else computed once here (un-augmented: the config demands --augment none)."""
        from safetensors.torch import load_file
        from tqdm import tqdm

        path = self.run / TEACHER_LOGITS
        if resume and path.is_file():
            return load_file(str(path))["logits"].to(self.device)
        # its own generator: the global RNG stream must stay what an uncached run sees
        loader = torch.utils.data.DataLoader(
            train_set, batch_size=256, num_workers=self.cfg.workers, generator=torch.Generator()
        )
        fmt = torch.channels_last if self.cfg.channels_last else torch.preserve_format
        bar = tqdm(loader, desc="teacher logits", unit="batch", disable=self.quiet or not sys.stderr.isatty())
        logits = torch.cat([self.teacher(images.to(self.device, memory_format=fmt)).float() for images, _ in bar])
        if resume and self.dist.main:  # a fresh run writes them with its config (_start_run_dir)
            self._write_teacher_logits(logits)
        return logits

    def _write_teacher_logits(self, logits: torch.Tensor) -> None:
        from safetensors.torch import save as safetensors_bytes

        data = safetensors_bytes({"logits": logits.cpu().contiguous()})
        atomic_write(self.run / TEACHER_LOGITS, lambda f: f.write(data))

    def _load_teacher(self, path: str):
        """The teacher, frozen, fed the student's batches in its own preprocessing."""
        from effnet.predict import load_for_inference
        from effnet.training.evaluate import check_classes

        teacher = load_for_inference(path)
        if not isinstance(teacher, torch.nn.Module):
            raise UsageError(f"--teacher {path}: give a torch weights file (.safetensors), not an export")
        check_classes(teacher, self.data.classes, f"--teacher {path}", f"--data {self.cfg.data}")
        teacher = teacher.to(self.device).eval().requires_grad_(False)
        if self.cfg.channels_last:
            teacher = teacher.to(memory_format=torch.channels_last)
        return TeacherInput(teacher, self.model.preprocessing)

    def _finite_everywhere(self, value: torch.Tensor) -> bool:
        flag = torch.tensor([0.0 if torch.isfinite(value) else 1.0], device=self.device)
        if self.dist.world > 1:
            dist.all_reduce(flag)
        return flag.item() == 0.0

    def _train_step(self, micro_batches) -> tuple[float, int, int] | None:
        """One optimizer step over ``accum_steps`` micro-batches; None if it was skipped."""
        snapshot = [b.clone() for b in _bn_buffers(self.model)]
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum, correct, seen = 0.0, 0, 0
        ok = True
        for images, labels, *index in micro_batches:  # index: with cached teacher logits
            fmt = torch.channels_last if self.cfg.channels_last else torch.preserve_format
            images, labels = images.to(self.device, memory_format=fmt), labels.to(self.device)
            logits, loss = self._forward_loss(images, labels, *index)
            if not self._finite_everywhere(loss.detach()):
                ok = False
                break
            (loss / self.cfg.accum_steps).backward()
            loss_sum += loss.item() * len(labels)
            correct += (logits.argmax(1) == labels).sum().item()
            seen += len(labels)
        if ok:
            max_norm = self.cfg.clip_grad or math.inf
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
            ok = self._finite_everywhere(norm)
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
        return loss_sum, correct, seen

    def _log(self, message: str) -> None:
        if self.dist.main and not self.quiet:
            print(message, file=sys.stderr, flush=True)

    def fit(self) -> dict:
        from tqdm import tqdm

        cfg = self.cfg
        writer = None
        if self.dist.main:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.run / "tensorboard"))
        try:
            while self.epoch < cfg.epochs:
                self._run_epoch(tqdm, writer)
        finally:
            if writer:
                writer.close()
        return self.rows[-1] if self.rows else {}

    def _run_epoch(self, tqdm, writer) -> None:
        cfg = self.cfg
        self.net.train()  # evaluation at the end of the last epoch left it in eval mode
        start = time.perf_counter()
        loader = iter(self._loader(self.epoch, self.step_in_epoch * cfg.accum_steps))
        bar = tqdm(
            total=self.steps_per_epoch,
            initial=self.step_in_epoch,
            desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
            unit="step",
            disable=self.quiet or not self.dist.main or not sys.stderr.isatty(),
        )
        if self.step_in_epoch == 0:
            self.epoch_sums = [0.0, 0, 0]
        seen_here = 0
        while self.step_in_epoch < self.steps_per_epoch:
            micro = [next(loader) for _ in range(cfg.accum_steps)]
            result = self._train_step(micro)
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
                self.bad_in_a_row = 0
                self.global_step += 1
                self.epoch_sums = [a + b for a, b in zip(self.epoch_sums, result, strict=True)]
                seen_here += result[2]
                elapsed = max(1e-9, time.perf_counter() - start)
                rate = seen_here * self.dist.world / elapsed
                bar.set_postfix(loss=f"{result[0] / max(1, result[2]):.3f}", img_s=f"{rate:.0f}")
            bar.update(1)
            if cfg.checkpoint_every and self.step_in_epoch % cfg.checkpoint_every == 0 and self.dist.main:
                if self.step_in_epoch < self.steps_per_epoch:
                    self._save_state()
        bar.close()
        self._end_epoch(seen_here, time.perf_counter() - start, writer)

    def _end_epoch(self, seen_here, seconds, writer) -> None:
        cfg = self.cfg
        loss_sum, correct, seen = self.epoch_sums
        if self.dist.world > 1:
            totals = torch.tensor([loss_sum, correct, seen], dtype=torch.float64, device=self.device)
            dist.all_reduce(totals)
            loss_sum, correct, seen = totals.tolist()
        judged = self.ema.module if self.ema else self.model
        metrics = {}
        if self.dist.main:
            loader = torch.utils.data.DataLoader(
                self.val_set, batch_size=max(64, cfg.batch_size), num_workers=cfg.workers
            )
            metrics = evaluate(judged, loader, len(self.data.classes), cfg.channels_last, cfg.amp, self.device)
        row = {
            "epoch": self.epoch + 1,
            "step": self.global_step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": loss_sum / max(1, seen),
            "train_top1": correct / max(1, seen),
            "val_loss": metrics.get("loss"),
            "val_top1": metrics.get("top1"),
            "val_top5": metrics.get("top5"),
            "skipped_steps": self.skipped_steps,
            "epoch_seconds": round(seconds, 2),
            "images_per_second": round(seen_here * self.dist.world / max(seconds, 1e-9), 1),
        }
        self.rows.append(row)
        self.epoch += 1
        self.step_in_epoch = 0
        if self.dist.main:
            if row["val_top1"] > self.best_top1:
                self.best_top1 = row["val_top1"]
                self._save_weights("best.safetensors", judged)
            self._save_weights("last.safetensors", self.model)
            write_metrics_csv(self.run, self.rows)
            plot_curves(self.run, self.rows)
            for key in ("train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "lr"):
                writer.add_scalar(key, row[key], self.global_step)
            writer.flush()
            self._save_state()
            self._log(
                f"epoch {row['epoch']}/{cfg.epochs}: train loss {row['train_loss']:.4f} top-1 {row['train_top1']:.2%}, "
                f"val top-1 {row['val_top1']:.2%} top-5 {row['val_top5']:.2%}, {row['images_per_second']} img/s"
            )
        if self.dist.world > 1:
            dist.barrier()


def distillation_loss(student, teacher, hard_loss, temperature: float, alpha: float) -> torch.Tensor:
    """Hinton et al. (2015): KL divergence between the softened distributions, scaled by T^2 so
    its gradients keep their size as T changes, mixed with the loss on the labels."""
    soft = F.kl_div(
        F.log_softmax(student / temperature, dim=1),
        F.log_softmax(teacher.float() / temperature, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return alpha * temperature**2 * soft + (1.0 - alpha) * hard_loss


class TeacherInput(torch.nn.Module):
    """Runs a teacher on the student's batch: undoes the student's normalisation, applies the
    teacher's, and resizes to the teacher's resolution when the two differ."""

    def __init__(self, teacher: torch.nn.Module, student: Preprocessing):
        super().__init__()
        self.teacher, self.student, self.own = teacher, student, teacher.preprocessing

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images
        if (self.own.mean, self.own.std) != (self.student.mean, self.student.std):
            s_mean, s_std, t_mean, t_std = (
                torch.tensor(v, device=x.device).view(1, -1, 1, 1)
                for v in (self.student.mean, self.student.std, self.own.mean, self.own.std)
            )
            x = ((x * s_std + s_mean) - t_mean) / t_std
        if self.own.resolution != x.shape[-1]:
            x = F.interpolate(x, size=self.own.resolution, mode="bilinear", align_corners=False, antialias=True)
        return self.teacher(x)


def train(cfg: TrainConfig, run: str | os.PathLike, *, resume: bool = False, quiet: bool = False) -> dict:
    """Train per ``cfg`` into the directory ``run``; returns the last epoch's metrics row."""
    try:
        return Trainer(cfg, run, resume=resume, quiet=quiet).fit()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
