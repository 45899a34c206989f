"""EfficientDet: the BiFPN's node layout, the scaling table against the paper's rule, and the
network against the reference port (``effdet``) with its weights converted — class and box
outputs of every released model equal to 1e-4, parameter counts exact."""

import json
from dataclasses import replace

import pytest
import torch

from effnet.core.errors import UsageError
from effnet.models.anchors import anchor_boxes, decode_boxes, encode_boxes
from effnet.models.bifpn import Node, bifpn_nodes, feature_sizes
from effnet.models.efficientdet import EfficientDetConfig, EfficientDetNet, efficientdet_config
from effnet.models.efficientdet_detector import create_efficientdet, select_detections
from effnet.models.efficientdet_loss import LossSettings, detection_loss, label_anchors
from effnet.models.efficientdet_specs import ASPECT_RATIOS, NUM_SCALES, PUBLISHED, detector_scale
from effnet.weights.effdet import convert_effdet_state_dict
from effnet.weights.entry import PARAMS
from tests.conftest import give_bn_real_statistics, import_required, run_cli

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
    # timm's residual blocks: the branch's last BN (bn3, or a depthwise-separable block's bn2)
    residual = [b for b in model.backbone.modules() if getattr(b, "has_skip", False)]
    give_bn_real_statistics(model, side, batch=2, damped={id(getattr(b, "bn3", None) or b.bn2) for b in residual})
    return model


def test_d7_is_d6s_network_with_larger_inputs_and_anchors():
    # so D6's output parity below is D7's too: the two differ in what the network is built for
    d6, d7 = PUBLISHED["efficientdet_d6"], PUBLISHED["efficientdet_d7"]
    assert (d7.image_size, d7.anchor_scale) == (1536, 5.0) and replace(d7, image_size=1280, anchor_scale=4.0) == d6


@pytest.mark.parametrize("name", [n for n in PUBLISHED if n != "efficientdet_d7"])
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
    assert have == want == PARAMS[name]  # the weights catalog's count (a download's size)


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


def _reference_config(side: int, num_classes: int):
    from effdet.config import get_efficientdet_config

    config = get_efficientdet_config("tf_efficientdet_d0")
    config.image_size, config.num_classes = (side, side), num_classes
    return config


def _outputs(num_classes: int, side: int, batch: int = 2):
    """Head outputs shaped as D0's at ``side`` px: logits around the prior, small box codes."""
    torch.manual_seed(1)
    grid = feature_sizes(side, 7)[3:]
    classes = [torch.randn(batch, 9 * num_classes, g, g) * 2 - 4 for g in grid]
    boxes = [torch.randn(batch, 36, g, g) * 0.3 for g in grid]
    return classes, boxes


def _ground_truth():
    boxes = torch.tensor([[10.0, 12.0, 50.0, 40.0], [60.0, 70.0, 90.0, 120.0], [20.0, 20.0, 24.0, 26.0]])  # yxyx
    return boxes, torch.tensor([1, 3, 2])


def test_anchor_targets_equal_the_reference_labeler():
    from effdet.anchors import AnchorLabeler, Anchors

    reference = Anchors.from_config(_reference_config(SIDE, 3))
    boxes, labels = _ground_truth()
    want_cls, want_box, want_pos = AnchorLabeler(reference, 3, match_threshold=0.5).label_anchors(boxes, labels)
    classes, codes, positives = label_anchors(reference.boxes, boxes, labels)
    assert torch.equal(classes, torch.cat([c.reshape(-1) for c in want_cls]))
    assert torch.equal(codes, torch.cat([b.reshape(-1, 4) for b in want_box]))
    assert positives == want_pos and positives >= 3  # every box has at least its best anchor
    # the 4x6 box overlaps no anchor by 0.5: it still gets its best one (a small object is never unseen)
    assert (classes == 1).sum() >= 1


def test_loss_equals_the_reference_loss():
    from effdet.anchors import AnchorLabeler, Anchors
    from effdet.loss import DetectionLoss

    config = _reference_config(SIDE, 3)
    reference = Anchors.from_config(config)
    boxes, labels = _ground_truth()
    labeler = AnchorLabeler(reference, 3, match_threshold=0.5)
    cls_t, box_t, pos = labeler.batch_label_anchors([boxes, boxes[:1]], [labels, labels[:1]])
    class_outputs, box_outputs = _outputs(3, SIDE)
    _, want_class, want_box = DetectionLoss(config)(class_outputs, box_outputs, cls_t, box_t, pos)
    ours = [label_anchors(reference.boxes, b, n) for b, n in ((boxes, labels), (boxes[:1], labels[:1]))]
    classes, codes, positives = (torch.stack(p) for p in zip(*ours, strict=True))
    got = detection_loss(class_outputs, box_outputs, classes, codes, positives, LossSettings())
    torch.testing.assert_close(got["loss_classifier"], want_class, rtol=1e-5, atol=0)
    torch.testing.assert_close(got["loss_box_reg"], 50 * want_box, rtol=1e-5, atol=0)


def test_detections_equal_the_reference_post_processing():
    from effdet.anchors import Anchors
    from effdet.bench import _batch_detection, _post_process

    anchors = Anchors.from_config(_reference_config(SIDE, 4)).boxes
    class_outputs, box_outputs = _outputs(4, SIDE)
    top = _post_process(class_outputs, box_outputs, num_levels=5, num_classes=4, max_detection_points=1000)
    want = _batch_detection(2, *top[:2], anchors, *top[2:], max_det_per_image=100)
    got = select_detections(class_outputs, box_outputs, anchors, max_detections=100)
    for image, mine in zip(want, got, strict=True):
        n = len(mine["scores"])
        assert n == 100
        assert torch.equal(mine["boxes"], image[:n, :4]) and torch.equal(mine["scores"], image[:n, 4])
        assert torch.equal(mine["labels"].float(), image[:n, 5])


def _canvases():
    """Two 96x128 grey images, a red box (class 1) in one and a blue one (class 2) in the other."""
    images = torch.full((2, 3, 96, 128), 0.5)
    images[0, :, 30:60, 20:70] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]
    images[1, :, 10:80, 60:110] = torch.tensor([0.1, 0.1, 0.9])[:, None, None]
    targets = [{"boxes": torch.tensor([[20.0, 30.0, 70.0, 60.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[60.0, 10.0, 110.0, 80.0]]), "labels": torch.tensor([2])}]  # fmt: skip
    return images, targets


def test_the_detector_learns_two_boxes_and_maps_them_back_to_the_image():
    from torchvision.ops import box_iou

    torch.manual_seed(0)
    detector = create_efficientdet("efficientdet_d0", num_classes=2, image_size=SIDE, drop_path_rate=0.0)
    images, targets = _canvases()
    optimizer = torch.optim.AdamW(detector.parameters(), lr=2e-3)
    detector.train()
    first = None
    for _ in range(40):
        losses = detector(images, targets)
        loss = sum(losses.values())
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.2 * first, (first, loss.item())
    # 40 steps leave the running BN statistics (momentum 0.01) far from the batch's: measure them,
    # on the two images 8 times over (the running variance is the unbiased one: at P7's 1x1 grid
    # two images alone would double it against what training normalised with)
    for m in detector.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        detector(images.repeat(8, 1, 1, 1), targets * 8)
    detector.eval()
    with torch.no_grad():
        found = detector(images)
    for result, target in zip(found, targets, strict=True):
        best = result["scores"].argmax()
        assert result["labels"][best] == target["labels"][0]
        # boxes come back in the 128x96 image's pixels, not the letterboxed 128x128 input's
        assert box_iou(result["boxes"][best : best + 1], target["boxes"]) > 0.6, result["boxes"][best]


def test_models_table_of_detectors_gives_the_papers_costs():
    rows = json.loads(run_cli("models", "--task", "detection", "--filter", "efficientdet_d0", "--json").check().stdout)
    (d0,) = rows
    # Table 2 of the paper: D0 has 3.9 M parameters and 2.5 B FLOPs (multiply-adds) at 512 px
    assert d0["params"] == 3_880_067 and d0["image_size"] == 512
    assert d0["macs"] == pytest.approx(2.5e9, rel=0.01)
    proc = run_cli("models", "--task", "detection", "--filter", "yolo*")
    assert proc.returncode == 2 and "matches no detector" in proc.stderr


def test_onnx_and_openvino_exports_detect_as_eager_does(tmp_path):
    """The graph holds the network, decoding and NMS; the runner letterboxes with eager's own code,
    so a non-square image gives eager's boxes and scores on both engines."""
    from effnet.deploy.detector_export import _detection_diff
    from effnet.deploy.export import export
    from effnet.deploy.openvino import OpenVinoModel
    from effnet.deploy.runtime import OnnxModel

    torch.manual_seed(0)
    detector = create_efficientdet("efficientdet_lite0", num_classes=3, image_size=SIDE, class_names=["a", "b", "c"])
    detector.eval()
    onnx_file = export(detector, tmp_path / "det.onnx", image_size=SIDE)
    ir_file = export(detector, tmp_path / "det.xml", image_size=SIDE)
    assert onnx_file.relative_diff <= 1e-4 and ir_file.relative_diff <= 1e-4
    image = torch.rand(3, 96, 150)
    detector.score_thresh = 0.0  # a random model scores below the default 0.05: compare all 100
    with torch.no_grad():
        expected = detector([image])[0]
    onnx_path, ir_path = tmp_path / "det.onnx", tmp_path / "det.xml"
    engines = (OnnxModel(onnx_path), OpenVinoModel(ir_path), OpenVinoModel(onnx_path))
    for engine in engines:
        assert engine([image])[0]["scores"].numel() == 0  # the export's own threshold, 0.05, applies
        got = engine.detect(image.numpy(), score_thresh=0.0)
        assert len(got["scores"]) == len(expected["scores"]) == 100
        # the best 20 scores and the box of each (ties may come in either order), within 0.01 px
        assert _detection_diff(expected, got, SIDE) <= 1e-2, engine
    with pytest.raises(UsageError, match="built for 128 px inputs .*--image-size 128"):
        export(detector, tmp_path / "other.onnx", image_size=160)
    assert not (tmp_path / "other.onnx").exists()
