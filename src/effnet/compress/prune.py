"""Structured channel pruning of the blocks' expansion channels, with Torch-Pruning.

Each MBConv's expansion channels form one dependency group: the 1x1 expansion conv's outputs,
its BN, the depthwise conv (whose groups equal its channels), that BN, the SE reduce conv's
inputs and SE expand conv's outputs (the gate multiplies the same channels), and the
projection's inputs. A V2 Fused-MBConv's group is its kxk conv's outputs, its BN and the
projection's inputs. Torch-Pruning traces the graph and removes a channel from all of them at
once; we only choose which groups to prune and how many channels. Block outputs (the residual
stream) are left alone: pruning them couples every block of a stage through the additions.

The result is an ordinary dense EfficientNet whose config lists each block's remaining
expansion width (``hidden_channels``), so ``effnet.open`` rebuilds it without Torch-Pruning.
A detector, segmenter or embedder is pruned in its trunk the same way: the channels each level
hands to the FPN, decoder or embedding head are block outputs, so the heads are untouched.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import tempfile
from pathlib import Path

import torch

from effnet.core.errors import UsageError
from effnet.core.fileio import refuse_overwrite
from effnet.deploy.export import input_spec
from effnet.models.blocks import INVERTED_RESIDUALS
from effnet.models.flops import count_macs
from effnet.models.registry import build_model
from effnet.models.task_models import build_task_model
from effnet.tasks.registry import registration, task_of
from effnet.training.config import SHORT_RUN, TrainConfig
from effnet.training.launch import trainer_class
from effnet.weights.io import load, save
from effnet.weights.trained import load_trained, require_model_file


def check_ratio(ratio: float) -> float:
    if not (isinstance(ratio, (int, float)) and math.isfinite(ratio) and 0.0 < ratio < 1.0):
        raise UsageError(f"--ratio must be in (0, 1): the fraction of expansion channels to remove, got {ratio!r}")
    return float(ratio)


def prune_in_place(model, ratio: float, round_to: int = 8) -> None:
    """Remove ``ratio`` of every block's expansion channels from ``model`` itself: in each
    group, the channels of least L2 magnitude over all the group's tensors; multiples of
    ``round_to`` are kept (SIMD-friendly widths)."""
    import torch_pruning as tp

    ratio = check_ratio(ratio)
    side = model.config.resolution
    graph = tp.DependencyGraph().build_dependency(
        model, example_inputs=torch.randn(1, model.config.in_chans, side, side)
    )
    importance = tp.importance.GroupMagnitudeImportance(p=2)
    for block in (m for m in model.modules() if isinstance(m, INVERTED_RESIDUALS)):
        conv = block.expansion_conv
        if conv is None:
            continue  # MBConv1 / Fused-MBConv1: its "expansion" is the residual stream itself
        channels = conv.out_channels
        keep = max(round_to, int(round(channels * (1.0 - ratio) / round_to)) * round_to)
        if keep >= channels:
            continue
        group = graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=list(range(channels)))
        scores = importance(group)
        drop = torch.argsort(scores)[: channels - keep].tolist()
        graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=drop).prune()


def recalibrate_batchnorm(model, dataset, batches: int = 50, batch_size: int = 64, seed: int = 0) -> None:
    """Re-estimate every BatchNorm's running statistics on ``batches`` batches of ``dataset``.

    Pruning removes channels whose contributions the following layers' statistics still count:
    a projection conv that lost 60% of its inputs produces smaller outputs than its BN expects,
    and the error compounds block after block (a 90% model falls to chance before any
    fine-tuning). Re-estimating the statistics (a cumulative average, no gradients) makes the
    pruned model usable as it is; fine-tuning normalises with batch statistics and is unaffected."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: every batch weighs the same
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )
    training = model.training
    model.train()
    with torch.no_grad():
        for index, (images, *_) in enumerate(loader):
            if index == batches:
                break
            model(images)
    for bn, momentum in zip(norms, momenta, strict=True):
        bn.momentum = momentum
    model.train(training)


def prune_expansion_channels(model, ratio: float, round_to: int = 8):
    """A pruned copy of ``model``, rebuilt as a plain EfficientNet from its config."""
    training = model.training
    model = copy.deepcopy(model).cpu().eval()
    prune_in_place(model, ratio, round_to)
    hidden = tuple(b.hidden_channels for b in model.modules() if isinstance(b, INVERTED_RESIDUALS))
    config = dataclasses.replace(model.config, hidden_channels=hidden)
    pruned = build_model(config, class_names=model.class_names, preprocessing=model.preprocessing)
    # Rebuilt from the config alone, as effnet.open will: the weights must fit it exactly.
    pruned.load_state_dict(model.state_dict())
    return pruned.train(training)


def prune_trunk(model, ratio: float, round_to: int = 8):
    """A copy of a detection, segmentation or embedding ``model`` with its trunk pruned, rebuilt
    from its config (the trunk's ``hidden_channels``) as ``effnet.open`` will."""
    training = model.training
    model = copy.deepcopy(model).cpu().eval()
    prune_in_place(model.trunk, ratio, round_to)
    hidden = tuple(b.hidden_channels for b in model.trunk.modules() if isinstance(b, INVERTED_RESIDUALS))
    config = dataclasses.replace(model.config, backbone=dataclasses.replace(model.config.backbone,
                                                                            hidden_channels=hidden))  # fmt: skip
    pruned = build_task_model(config, model.class_names)
    pruned.preprocessing = model.preprocessing  # an embedder's input size is set after it is built
    pruned.load_state_dict(model.state_dict())
    return pruned.train(training)


def prune_model(model, ratio: float, round_to: int = 8):
    """A pruned copy of a model of any task: a classifier's blocks, or a task model's trunk."""
    if hasattr(model, "trunk"):
        return prune_trunk(model, ratio, round_to)
    return prune_expansion_channels(model, ratio, round_to)


def _trunk_config(model):
    return model.config.backbone if hasattr(model, "trunk") else model.config


def prune(
    weights: str,
    ratio: float,
    out: str,
    *,
    data: str | None = None,
    finetune_epochs: int = 1,
    lr: float = 1e-3,
    batch_size: int = 64,
    limit_train: int | None = None,
    seed: int = 0,
    quiet: bool = True,
) -> dict:
    """Prune the model in ``weights`` (a classifier's blocks, or the trunk of a detector, segmenter
    or embedder), fine-tune the whole model with its task's trainer on ``data`` (default: the data
    it was trained on) and write the result to ``out``. Returns params/MACs (of the pruned part)
    before and after and, when fine-tuned, the validation score (``metric``: top1, mAP, mIoU,
    ROC-AUC) after pruning, after BN re-estimation (classifiers) and after fine-tuning."""
    ratio = check_ratio(ratio)
    out_path = Path(out)
    if out_path.suffix != ".safetensors" or out_path.is_dir():
        raise UsageError(f"--out {out}: give a .safetensors file to write")
    refuse_overwrite(out_path, [weights], "--out")
    if finetune_epochs < 0:
        raise UsageError(f"--finetune-epochs must be >= 0, got {finetune_epochs}")
    require_model_file(weights)
    trained = load_trained(weights)
    model, training = trained.model, trained.provenance.training
    task = task_of(model)
    pruned = prune_model(model, ratio)
    side = input_spec(model)[1]
    report = {
        "task": task,
        "metric": registration(task).metric,
        "ratio": ratio,
        "params_before": sum(p.numel() for p in model.parameters()),
        "params_after": sum(p.numel() for p in pruned.parameters()),
        "macs_before": count_macs(_trunk_config(model), side),
        "macs_after": count_macs(_trunk_config(pruned), side),
    }
    report["macs_ratio"] = report["macs_after"] / report["macs_before"]
    provenance = {"training": json.dumps(training)} if training else None  # what eval, quantize... read
    if finetune_epochs == 0:
        save(pruned, out_path, extra_metadata=provenance)
        return report
    options = trained.provenance.data_options(data, origin=weights)
    with tempfile.TemporaryDirectory(prefix="effnet-prune-") as scratch:
        start = Path(scratch) / "pruned.safetensors"
        save(pruned, start)
        # a classifier trains at its resolution; the other tasks at the size their run used
        image_size = model.config.resolution if task == "classification" else training.get("image_size")
        cfg = TrainConfig(
            task=task,
            model=None,
            weights=str(start),
            data=options["data"],
            data_dir=options["data_dir"],
            annotations=training.get("annotations", "annotations.json"),
            val_split=options["val_split"],
            image_size=image_size,
            limit_train=limit_train,
            epochs=finetune_epochs,
            batch_size=batch_size,
            seed=seed,
            lr=lr,
            warmup_epochs=0.0,  # the weights are trained already: no warm-up from scratch
            **SHORT_RUN,
        )
        trainer = trainer_class(task)(cfg, Path(scratch) / "run", quiet=quiet)
        try:
            report["val_score_pruned"] = trainer.validate(trainer.model)["score"]
            if task == "classification":
                # BN statistics re-estimated: what pruning alone gives without any training
                recalibrate_batchnorm(trainer.model, trainer.train_set, seed=seed)
                report["val_score_recalibrated"] = trainer.validate(trainer.model)["score"]
            trainer.fit()
        finally:
            trainer.rundir.unlock()
        report["val_score_finetuned"] = trainer.best_score
        best = load(Path(scratch) / "run" / "best.safetensors")
        save(best, out_path, extra_metadata=provenance)
    return report
