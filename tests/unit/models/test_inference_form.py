"""BatchNorm folding and export: the inference forms of a model give the same outputs."""

import pytest
import torch

import effnet
from effnet.models.fuse import fuse_batchnorm
from tests.conftest import give_bn_real_statistics


@pytest.mark.parametrize(
    "name,padding", [("efficientnet_b0", "symmetric"), ("efficientnet_lite1", "same"), ("efficientnetv2_b0", "same")]
)
def test_fused_model_matches_unfused(name, padding):
    model = effnet.create_model(name, padding=padding, bn_eps=1e-5)
    give_bn_real_statistics(model, 64)
    fused = fuse_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()), "the original is left intact"
    x = torch.randn(2, 3, 67, 67)
    with torch.no_grad():
        expected, got = model(x), fused(x)
    assert expected.abs().mean().item() > 0.1
    # 1e-4 of the output scale (its largest magnitude), the tolerance every export test uses:
    # folding changes float32 rounding, more so on one thread (make test's workers) than on two.
    scale = expected.abs().max().item()
    assert (got - expected).abs().max().item() <= 1e-4 * max(1.0, scale)


@pytest.mark.parametrize("padding,side", [("symmetric", 64), ("same", 64), ("same", 97)])
def test_torch_export_with_dynamic_batch(padding, side):
    # Export is for a fixed image size (as deployment is); the batch stays dynamic.
    model = effnet.create_model("efficientnet_b0", padding=padding, width=0.5, depth=0.5, num_classes=4)
    give_bn_real_statistics(model, 64)
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model, (torch.randn(2, 3, side, side),), dynamic_shapes=({0: batch},))
    x = torch.randn(3, 3, side, side)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(program.module()(x), expected, rtol=1e-4, atol=1e-4 * expected.abs().mean().item())
