"""Every registered model, driven by the registry."""

import math

import pytest
import torch

import effnet
from effnet.models.registry import register
from effnet.models.scaling import PUBLISHED

SMALL = [n for n in effnet.list_models("efficientnet_*") if n[-1] in "0123" and not n.endswith("l2")]
SMALL += ["efficientnetv2_b0"]
# The four largest (87-480 M parameters) run at batch 1 with their 1000-class head, whose parameter
# count is the published one (timm's B8, L2 and V2-XL, torchvision's V2-L). Their parity tests need
# EFFNET_HUGE_TESTS=1 (B8, L2) or do not exist (V2-L, V2-XL), so this is their only forward pass in
# make test: ~20 s for the four together on one core, most of it L2's initialisation.
HUGE = {
    "efficientnet_b8": 87_413_142,
    "efficientnet_l2": 480_309_308,
    "efficientnetv2_l": 118_515_272,
    "efficientnetv2_xl": 208_119_808,
}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n == "efficientnet_l2" else n for n in effnet.list_models()]
)
def test_forward_shape_and_finite(name):
    batch, classes = (1, 1000) if name in HUGE else (2, 7)
    model = effnet.create_model(name, num_classes=classes).eval()
    if name in HUGE:
        assert sum(p.numel() for p in model.parameters()) == HUGE[name]
    with torch.no_grad():
        out = model(torch.randn(batch, 3, 64, 64))
    assert out.shape == (batch, classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", SMALL)
def test_every_parameter_gets_a_gradient(name):
    model = effnet.create_model(name, num_classes=5).train()
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_b3", "efficientnet_lite2", "efficientnetv2_s"])
def test_features_only_strides_and_channels(name):
    import timm

    model = effnet.create_model(name, features_only=True).eval()
    feats = model(torch.randn(1, 3, 128, 128))
    assert [f["reduction"] for f in model.feature_info] == [4, 8, 16, 32]
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4]
    assert [f.shape[1] for f in feats] == model.feature_channels
    peer = timm.create_model(name, features_only=True, out_indices=(1, 2, 3, 4), pretrained=False)
    assert model.feature_channels == peer.feature_info.channels()


def test_features_only_drops_unused_stages_and_trains():
    model = effnet.create_model("efficientnet_b0", features_only=True, out_indices=(0, 1, 2))
    assert [f["channels"] for f in model.feature_info] == [16, 24, 40]
    assert len(model.stages) == 3 and model.head is None
    sum(f.sum() for f in model(torch.randn(1, 3, 64, 64))).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_phi_models_follow_the_formula():
    model = effnet.create_model(phi=1.5)
    cfg = model.config
    assert cfg.width == pytest.approx(1.1**1.5) and cfg.depth == pytest.approx(1.2**1.5)
    assert cfg.resolution == round(224 * 1.15**1.5)
    assert cfg.name == "efficientnet_b0_phi1.5"


def test_phi_with_custom_coefficients_and_lite_baseline():
    cfg = effnet.create_model("efficientnet_lite0", phi=1, alpha=1.3, beta=1.05, gamma=1.1).config
    assert cfg.family == "lite"
    assert (cfg.depth, cfg.width) == (pytest.approx(1.3), pytest.approx(1.05))


def test_explicit_multipliers_override_the_table():
    cfg = effnet.create_model("efficientnet_b2", width=0.5, resolution=96).config
    assert (cfg.width, cfg.depth, cfg.resolution) == (0.5, 1.2, 96)


def test_grayscale_input_channels():
    model = effnet.create_model("efficientnet_b0", in_chans=1, num_classes=10).eval()
    assert model(torch.randn(1, 1, 32, 32)).shape == (1, 10)


def test_same_padding_matches_tf_output_sizes():
    # TF SAME: output = ceil(input / stride) for any input size, odd ones included.
    model = effnet.create_model("efficientnet_b0", padding="same", features_only=True, out_indices=(4,)).eval()
    for side in (97, 100, 225):
        (feat,) = model(torch.randn(1, 3, side, side))
        assert feat.shape[-1] == math.ceil(side / 32)


def test_symmetric_default_uses_plain_convs():
    model = effnet.create_model("efficientnet_b0")
    assert not any(isinstance(m, effnet.models.layers.Conv2dSame) for m in model.modules())


def test_unknown_model_name_suggests_close_names():
    with pytest.raises(effnet.UsageError, match="did you mean efficientnet_b0"):
        effnet.create_model("efficientnet_bo")


def test_phi_on_a_named_model_is_rejected():
    with pytest.raises(effnet.UsageError, match="baseline"):
        effnet.create_model("efficientnet_b3", phi=1)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"padding": "valid"}, "padding"),
        ({"out_indices": (1, 7)}, "out_indices"),
        ({"dropout": 1.5}, "dropout"),
        ({"width": float("nan")}, "width"),
        ({"num_classes": -1}, "num_classes"),
    ],
)
def test_bad_arguments_are_usage_errors(kwargs, match):
    with pytest.raises(effnet.UsageError, match=match):
        effnet.create_model("efficientnet_b0", **kwargs)


def test_registry_refuses_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        register("efficientnet_b0", "efficientnet", PUBLISHED["efficientnet_b0"])


def test_list_models_pattern():
    assert effnet.list_models("*lite*") == [f"efficientnet_lite{i}" for i in range(5)]
    assert effnet.list_models("efficientnetv2_b*") == [f"efficientnetv2_b{i}" for i in range(4)]
    assert len(effnet.list_models()) == 23


def test_drop_path_only_in_training():
    model = effnet.create_model("efficientnet_b0", num_classes=3, drop_path_rate=0.5, dropout=0.0)
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    model.train()
    torch.manual_seed(1)
    a = model.stages(model.stem(x))
    torch.manual_seed(2)
    b = model.stages(model.stem(x))
    assert not torch.equal(a, b)


def test_memory_efficient_training_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = effnet.create_model("efficientnet_b0", num_classes=4, drop_path_rate=0.5, width=0.5).train()
    saving = effnet.create_model("efficientnet_b0", num_classes=4, drop_path_rate=0.5, width=0.5).train()
    saving.load_state_dict(plain.state_dict())
    saving.set_memory_efficient()
    x = torch.randn(2, 3, 64, 64)
    grads = []
    for model in (plain, saving):
        torch.manual_seed(5)  # the same drop-path masks in both
        model(x).square().sum().backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-4, atol=1e-6, msg=name)
    with torch.no_grad():  # inference runs the plain modules
        torch.testing.assert_close(saving.eval()(x), plain.eval()(x))


def test_reset_classifier_keeps_the_config_true_through_a_file(tmp_path):
    model = effnet.create_model(phi=-3, num_classes=1000, resolution=32).eval()
    body = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("classifier.")}
    model.reset_classifier(7, class_names=list("abcdefg"))
    assert model.config.num_classes == 7 and model.classifier.out_features == 7
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    for key, value in body.items():  # only the classifier changed
        assert torch.equal(model.state_dict()[key], value), key
    opened = effnet.open(effnet.save(model, tmp_path / "m.safetensors"))
    assert opened.config == model.config and opened.class_names == list("abcdefg")
    features = model.reset_classifier(0)(torch.randn(2, 3, 32, 32))
    assert features.shape == (2, model.num_features) and model.config.num_classes == 0
    with pytest.raises(effnet.UsageError, match="names"):
        model.reset_classifier(3, class_names=["a"])
