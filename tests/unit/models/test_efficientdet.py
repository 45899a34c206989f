"""EfficientDet: the BiFPN's node layout, the scaling table against the paper's rule, and the
network against the reference port (``effdet``) with its weights converted — class and box
outputs of every released model equal to 1e-4, parameter counts exact."""

import pytest
import torch

from effnet.core.errors import UsageError
from effnet.models.anchors import anchor_boxes, decode_boxes, encode_boxes
from effnet.models.bifpn import Node, bifpn_nodes, feature_sizes
from effnet.models.efficientdet import EfficientDetConfig, EfficientDetNet, efficientdet_config
from effnet.models.efficientdet_specs import ASPECT_RATIOS, NUM_SCALES, PUBLISHED, detector_scale
from effnet.weights.effdet import convert_effdet_state_dict
from tests.conftest import import_required

effdet = import_required("effdet")

# P3..P7 of a 128 px input are 16..1 px: the smallest input every P3-P7 model is built for
SIDE = 128


def test_bifpn_nodes_are_the_papers_top_down_then_bottom_up_passes():
    # ids 0-4 are P3-P7; the top-down pass fuses each level with the one above, the bottom-up pass
    # each level's earlier nodes with the one below (Figure 2d)
    assert bifpn_nodes(3, 7) == [
        Node(6, (3, 4)), Node(5, (2, 5)), Node(4, (1, 6)), Node(3, (0, 7)),
        Node(4, (1, 7, 8)), Node(5, (2, 6, 9)), Node(6, (3, 5, 10)), Node(7, (4, 11)),
    ]  # fmt: skip
    assert len(bifpn_nodes(3, 8)) == 10  # D7x: P3-P8


def test_levels_are_halved_and_rounded_up():
    assert feature_sizes(512, 7)[3:] == [64, 32, 16, 8, 4]
    assert feature_sizes(320, 7)[3:] == [40, 20, 10, 5, 3]  # Lite0: P7 is 3x3, P6 5x5


def test_the_rule_gives_the_published_rows_where_the_paper_followed_it():
    for phi in (0, 1, 3):
        rule, published = detector_scale(phi), PUBLISHED[f"efficientdet_d{phi}"]
        assert rule == published, phi
    # where the released models left the rule (Table 1 vs google/automl's hparams): D2 is 112
    # wide (rule: 64 * 1.35^2 = 116.6, rounded 120), D5 has 7 cells (rule 8) at 1280 px (rule 1152)
    assert (detector_scale(2).fpn_channels, PUBLISHED["efficientdet_d2"].fpn_channels) == (120, 112)
    assert (detector_scale(5).fpn_repeats, detector_scale(5).image_size) == (8, 1152)
    assert detector_scale(0.5).backbone_phi == 0.5 and detector_scale(0.5).image_size % 128 == 0
    with pytest.raises(UsageError, match="phi must be a number in"):
        detector_scale(-1)


def test_config_round_trips_and_rejects_what_it_does_not_know():
    config = efficientdet_config("efficientdet_lite0", num_classes=3, image_size=256)
    assert EfficientDetConfig.from_dict(config.to_dict()) == config
    assert config.backbone.padding == "same" and config.backbone.out_indices == (2, 3, 4)
    with pytest.raises(UsageError, match="unknown EfficientDet config keys: extra"):
        EfficientDetConfig.from_dict({**config.to_dict(), "extra": 1})
    with pytest.raises(UsageError, match="image size must be an integer of at least 128"):
        efficientdet_config("efficientdet_d0", image_size=96)
    with pytest.raises(UsageError, match="unknown EfficientDet 'efficientdet_d9'"):
        efficientdet_config("efficientdet_d9")


def _reference(name: str, num_classes: int, side: int) -> torch.nn.Module:
    """effdet's model with random weights, BN statistics measured on a batch and small residual
    branches (as trained networks have), so that a 1e-4 tolerance means something."""
    torch.manual_seed(0)
    model = effdet.create_model(f"tf_{name}", pretrained_backbone=False, num_classes=num_classes,
                                image_size=(side, side))  # fmt: skip
    damped = set()
    for block in model.backbone.modules():
        if getattr(block, "has_skip", False):
            damped.add(id(getattr(block, "bn3", None) or getattr(block, "bn2", None)))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
            m.reset_running_stats()
            low, high = (0.05, 0.2) if id(m) in damped else (0.5, 1.5)
            torch.nn.init.uniform_(m.weight, low, high)
            torch.nn.init.uniform_(m.bias, -0.2, 0.2)
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 3, side, side))
    return model.eval()


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_outputs_equal_the_reference_port_with_its_weights_converted(name):
    side = 2 * SIDE if PUBLISHED[name].max_level == 8 else SIDE
    reference = _reference(name, 5, side)
    ours = EfficientDetNet(efficientdet_config(name, num_classes=5, image_size=side)).eval()
    ours.load_state_dict(convert_effdet_state_dict(reference.state_dict()))
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    for kind, want, have in zip(("class", "box"), expected, got, strict=True):
        assert len(have) == len(want) == PUBLISHED[name].max_level - 2
        for level, (a, b) in enumerate(zip(want, have, strict=True)):
            assert a.shape == b.shape, (kind, level)
            assert (a - b).abs().max() <= 1e-4 * a.abs().max(), (kind, level, (a - b).abs().max(), a.abs().max())


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_parameter_counts_equal_the_reference_ports(name):
    with torch.device("meta"):
        want = sum(p.numel() for p in effdet.create_model(f"tf_{name}", pretrained_backbone=False).parameters())
        have = sum(p.numel() for p in EfficientDetNet(efficientdet_config(name)).parameters())
    assert have == want


def test_input_of_another_size_is_refused_in_one_line():
    net = EfficientDetNet(efficientdet_config("efficientdet_d0", num_classes=2, image_size=SIDE)).eval()
    with pytest.raises(UsageError, match="takes \\(N, 3, 128, 128\\) images \\(it is built for 128 px\\), got"):
        net(torch.zeros(1, 3, 96, 96))


@pytest.mark.parametrize("name", ["efficientdet_d0", "efficientdet_lite0", "efficientdet_d7", "efficientdet_d7x"])
def test_anchors_are_the_reference_ports_to_the_bit(name):
    from effdet.anchors import Anchors
    from effdet.config import get_efficientdet_config

    scale = PUBLISHED[name]
    want = Anchors.from_config(get_efficientdet_config(f"tf_{name}")).boxes
    have = anchor_boxes(scale.image_size, min_level=3, max_level=scale.max_level, anchor_scale=scale.anchor_scale,
                        num_scales=NUM_SCALES, aspect_ratios=ASPECT_RATIOS)  # fmt: skip
    assert torch.equal(have, want)


def test_box_codes_round_trip_and_equal_the_reference_coder():
    from effdet.anchors import decode_box_outputs
    from effdet.object_detection import BoxList, FasterRcnnBoxCoder

    torch.manual_seed(0)
    anchors = anchor_boxes(128, min_level=3, max_level=7, anchor_scale=4.0, num_scales=3, aspect_ratios=ASPECT_RATIOS)
    yx = torch.rand(len(anchors), 2) * 100
    boxes = torch.cat([yx, yx + 1 + torch.rand(len(anchors), 2) * 60], 1)  # (y1, x1, y2, x2)
    codes = encode_boxes(boxes, anchors)
    assert torch.equal(codes, FasterRcnnBoxCoder().encode(BoxList(boxes), BoxList(anchors)))
    assert torch.equal(decode_boxes(codes, anchors), decode_box_outputs(codes, anchors, output_xyxy=True))
    torch.testing.assert_close(decode_boxes(codes, anchors), boxes[:, [1, 0, 3, 2]], rtol=0, atol=1e-3)
