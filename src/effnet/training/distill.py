"""Knowledge distillation (Hinton et al., 2015) as a criterion the trainer can hold in place of
the task's own loss: the student learns from the labels and from a frozen teacher's softened
outputs, computed live or read from a per-run cache."""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from tqdm import tqdm

from effnet.core.errors import UsageError
from effnet.core.fileio import atomic_write
from effnet.datasets.loading import ordered_loader
from effnet.models.preprocessing import Preprocessing
from effnet.tasks.entry import check_classes
from effnet.training.rundir import RunDir
from effnet.weights.trained import load_trained

TEACHER_LOGITS = "teacher_logits.safetensors"


def distillation_loss(student, teacher, hard_loss, temperature: float, alpha: float) -> torch.Tensor:
    """KL divergence between the softened distributions, scaled by T^2 so its gradients keep
    their size as T changes, mixed with the loss on the labels."""
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


def load_teacher(
    path: str, classes: list[str], data_name: str, student: Preprocessing, device, channels_last: bool
) -> TeacherInput:
    """The teacher, frozen, fed the student's batches in its own preprocessing."""
    if str(path).endswith(".onnx"):
        raise UsageError(f"--teacher {path}: give a torch weights file (.safetensors), not an export")
    teacher = load_trained(path).model
    check_classes(teacher, classes, f"--teacher {path}", f"--data {data_name}")
    teacher = teacher.to(device).eval().requires_grad_(False)
    if channels_last:
        teacher = teacher.to(memory_format=torch.channels_last)
    return TeacherInput(teacher, student)


def teacher_logits(
    teacher: TeacherInput, dataset, rundir: RunDir, *, resume: bool, device, channels_last: bool, workers: int,
    quiet: bool,
) -> torch.Tensor:  # fmt: skip
    """The teacher's logits for every training image in index order: read back from the run
    when resuming, else computed once (un-augmented: the config demands --augment none)."""
    path = rundir.path / TEACHER_LOGITS
    if resume and path.is_file():
        return load_file(str(path))["logits"].to(device)
    loader = ordered_loader(dataset, 256, workers)  # the global RNG stream stays what an uncached run sees
    fmt = torch.channels_last if channels_last else torch.preserve_format
    bar = tqdm(loader, desc="teacher logits", unit="batch", disable=quiet or not sys.stderr.isatty())
    return torch.cat([teacher(images.to(device, memory_format=fmt)).float() for images, _ in bar])


def write_teacher_logits(rundir: RunDir, logits: torch.Tensor) -> None:
    data = safetensors_bytes({"logits": logits.cpu().contiguous()})
    atomic_write(rundir.path / TEACHER_LOGITS, lambda f: f.write(data))


class Distillation:
    """The trainer's criterion with a teacher: ``alpha`` of the distillation term, the rest the
    task's loss on the labels. With cached ``logits`` the batch's sample indices find the rows."""

    def __init__(self, task, teacher: TeacherInput, temperature: float, alpha: float, logits=None):
        self.task, self.teacher, self.temperature, self.alpha, self.logits = task, teacher, temperature, alpha, logits

    @property
    def needs_index(self) -> bool:
        return self.logits is not None

    def __call__(self, outputs, targets, inputs, extras) -> torch.Tensor:
        hard = self.task.loss(outputs, targets)
        if self.logits is None:
            soft = self.teacher(inputs)
        else:
            soft = self.logits[extras["index"].to(self.logits.device)]
        return distillation_loss(outputs.float(), soft, hard, self.temperature, self.alpha)
