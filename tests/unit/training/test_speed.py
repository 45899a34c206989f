"""Issue 27's training speed settings: --precision (bf16 with fp32 depthwise), --compile with its
fallback, the records a run keeps of them, and runs written before them."""

import json
import warnings

import pytest
import torch
from torch import nn

import effnet
from effnet.core.errors import EffnetWarning, UsageError
from effnet.core.machine import cpu_flags
from effnet.training import TrainConfig
from effnet.training.classify import train
from effnet.training.compiled import CompiledOrEager
from effnet.training.precision import autocast, keep_depthwise_fp32, resolve_precision

CPU = torch.device("cpu")
HAS_BF16 = bool({"avx512_bf16", "amx_bf16"} & set(cpu_flags()))


def test_bf16_keeps_depthwise_convolutions_in_fp32_and_the_weights_too():
    model = effnet.create_model("efficientnet_b0", width=0.25, depth=0.2, num_classes=10)
    keys = list(model.state_dict())
    handles = keep_depthwise_fp32(model)
    dtypes = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            module.register_forward_hook(lambda m, i, o, name=name: dtypes.__setitem__(name, o.dtype))
    with autocast("bf16", CPU):
        logits = model(torch.randn(2, 3, 32, 32))
        assert torch.is_autocast_enabled("cpu")  # the depthwise hooks restored the region they left
    logits.float().sum().backward()
    depthwise = {n: d for n, d in dtypes.items() if n.endswith("dw_conv")}
    pointwise = {n: d for n, d in dtypes.items() if n.endswith(("expand_conv", "project_conv"))}
    assert depthwise and set(depthwise.values()) == {torch.float32}
    assert pointwise and set(pointwise.values()) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in model.parameters())
    assert list(model.state_dict()) == keys and len(handles) == 2 * len(depthwise)


def test_precision_is_resolved_per_hardware_and_bf16_is_refused_without_it(monkeypatch):
    chosen, why = resolve_precision("auto", CPU, gmacs_per_step=2.1)  # B0 at 64 px, batch 64
    # AMX: bf16 (with fp32 depthwise) trains fastest; AVX512-BF16 alone or no bf16: fp32
    assert chosen == ("bf16" if "amx_bf16" in cpu_flags() else "fp32") and why
    assert resolve_precision("auto", CPU, "detection", 2.1)[0] == "fp32"  # measured for classification only
    assert resolve_precision("auto", CPU, gmacs_per_step=0.15)[0] == "fp32"  # tiny steps lose in bf16
    assert resolve_precision("auto", CPU)[0] == "fp32"  # a module of unknown size
    assert resolve_precision("fp32", CPU) == ("fp32", "requested")
    fake_cpu(monkeypatch, ["avx2", "avx512f", "avx512_bf16"])
    assert resolve_precision("auto", CPU, gmacs_per_step=2.1)[0] == "fp32"
    fake_cpu(monkeypatch, ["avx2", "avx512f", "amx_bf16"])
    assert resolve_precision("auto", CPU, gmacs_per_step=2.1)[0] == "bf16"
    fake_cpu(monkeypatch, ["avx2", "avx512f"])
    with pytest.raises(UsageError, match="--precision bf16: this CPU has no bf16 instructions"):
        resolve_precision("bf16", CPU)
    assert resolve_precision("auto", CPU, gmacs_per_step=2.1) == ("fp32", "no bf16 instructions")
    with pytest.raises(UsageError, match="--precision must be one of auto, fp32, bf16"):
        TrainConfig(precision="fp16")


def fake_cpu(monkeypatch, flags: list[str]) -> None:
    for where in ("effnet.core.machine", "effnet.training.precision"):
        monkeypatch.setattr(f"{where}.cpu_flags", lambda: flags)


def test_a_bf16_run_learns_and_records_its_precision_pipeline_and_machine(tmp_path):
    cfg = TrainConfig(phi=-3, data="digits", image_size=24, batch_size=32, limit_train=640, epochs=2,
                      precision="bf16", seed=1)  # fmt: skip
    if not HAS_BF16:  # this CPU cannot: the run is refused before it writes anything
        with pytest.raises(UsageError, match="--precision bf16: this CPU has no bf16 instructions"):
            train(cfg, tmp_path / "run", quiet=True)
        assert not (tmp_path / "run" / "config.json").exists()
        return
    row = train(cfg, tmp_path / "run", quiet=True)
    assert row["val_top1"] >= 0.5  # chance: 0.1
    runtime = json.loads((tmp_path / "run" / "runtime.json").read_text())
    assert runtime["precision"] == "bf16" and runtime["pipeline"] == "batched" and runtime["channels_last"]
    assert runtime["machine"]["cpu_flags"] == cpu_flags()
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["recipe"]["precision"] == "bf16" and config["data"]["pipeline"] == "auto"


def test_compile_falls_back_to_eager_with_one_warning_when_the_compiler_fails(monkeypatch):
    monkeypatch.setattr(torch._inductor.config.cpp, "cxx", ("/nonexistent/g++",))
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    wrapped = CompiledOrEager(module)
    x = torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first, second = wrapped(x), wrapped(x)
    messages = [str(w.message) for w in caught if issubclass(w.category, EffnetWarning)]
    assert len(messages) == 1 and messages[0].startswith("--compile: torch.compile failed")
    assert "compiler" in messages[0].lower()
    assert wrapped.state == "eager"
    assert torch.equal(first, module(x)) and torch.equal(second, module(x))
    assert list(wrapped.module.state_dict()) == list(module.state_dict())


def test_a_run_written_before_precision_resumes_as_it_trained():
    old = {"model": "efficientnet_b0", "data": "digits", "amp": "none", "channels_last": False}
    cfg = TrainConfig.from_dict(old)
    assert (cfg.precision, cfg.pipeline, cfg.channels_last, cfg.compile) == ("fp32", "per-image", False, False)
    assert TrainConfig.from_dict({**old, "amp": "bf16"}).precision == "bf16"
    assert TrainConfig().pipeline == "auto" and TrainConfig().channels_last
