import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def give_bn_real_statistics(model: torch.nn.Module, side: int, batch: int = 4) -> None:
    """A freshly initialised EfficientNet outputs logits of ~1e-14 in eval mode, so any
    tolerance would pass. Random BN affines plus running statistics measured on a batch
    make every layer's eval output non-trivial."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average: one pass sets the statistics exactly
            m.reset_running_stats()
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
            torch.nn.init.uniform_(m.bias, -0.2, 0.2)
    model.train()
    with torch.no_grad():
        model(torch.randn(batch, 3, side, side))
    model.eval()
