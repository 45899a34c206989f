"""One path for a trained file: eval and predict prepare an image identically and get the same
logits, and the data a file was trained on (with its data directory, validation split and seed)
is what eval, quantization's calibration, pruning's fine-tuning and the compression pipeline's
distillation read when the caller does not name other data."""

import gzip
import json
import struct

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

import effnet
from effnet.compress import pipeline
from effnet.compress import prune as prune_module
from effnet.compress import quantize as quantize_module
from effnet.datasets.builtin import FASHION_MNIST_CLASSES
from effnet.datasets.loading import ImageDataset, load_data
from effnet.deploy import evaluate as evaluate_module
from effnet.deploy import predict as predict_module
from effnet.deploy.engines import inference_form, open_model
from effnet.deploy.evaluate import evaluate
from effnet.deploy.predict import predict
from effnet.weights.trained import Provenance, load_trained
from tests.conftest import give_bn_real_statistics


class _Recorder(torch.nn.Module):
    """Wraps the inference form and keeps every batch it is fed and every output it gives."""

    def __init__(self, net):
        super().__init__()
        self.net, self.inputs, self.outputs = net, [], []

    def forward(self, x):
        out = self.net(x)
        self.inputs.append(x.detach().clone())
        self.outputs.append(out.detach().clone())
        return out


def _small_model(num_classes: int, class_names=None, seed: int = 0):
    torch.manual_seed(seed)
    model = effnet.create_model(phi=-3, num_classes=num_classes, resolution=32, class_names=class_names)
    give_bn_real_statistics(model, 32, damp_residuals=True)
    return model


# ---------------------------------------------------------------- (a) eval and predict agree


@pytest.fixture
def image_folder(tmp_path):
    """train/ and val/ with classes 'cat' and 'dog': PNGs of odd sizes and modes, and a JPEG
    with an EXIF rotation."""
    rng = np.random.default_rng(0)
    root = tmp_path / "pets"
    for split, count in (("train", 3), ("val", 3)):
        for cls in ("cat", "dog"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                h, w = (40, 57) if i == 0 else (70, 45) if i == 1 else (33, 33)
                pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                image = Image.fromarray(pixels)
                if i == 1:
                    image = image.convert("L")
                elif i == 2:
                    image = Image.fromarray(np.dstack([pixels, rng.integers(0, 256, (h, w), dtype=np.uint8)]))
                image.save(folder / f"{i}.png")
            exif = Image.Exif()
            exif[0x0112] = 6  # rotate 90 degrees on display
            Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)).save(folder / "r.jpg", exif=exif)
    return root


@pytest.fixture
def folder_weights(tmp_path, image_folder):
    model = _small_model(2, ["cat", "dog"])
    training = {"data": str(image_folder), "data_dir": None, "val_split": 0.1, "seed": 0, "epochs": 1}
    return effnet.save(model, tmp_path / "pets.safetensors", extra_metadata={"training": json.dumps(training)})


def test_eval_and_predict_feed_the_model_the_same_tensors_and_agree(monkeypatch, image_folder, folder_weights):
    recorders = {}

    def recording(name):
        def wrap(model):
            recorders[name] = _Recorder(inference_form(model))
            return recorders[name]

        return wrap

    monkeypatch.setattr(evaluate_module, "inference_form", recording("eval"))
    monkeypatch.setattr(predict_module, "inference_form", recording("predict"))

    # eval: no --data, so the file's provenance names the folder
    metrics = evaluate(str(folder_weights), split="val", batch_size=3)
    assert metrics["classes"] == ["cat", "dog"]
    samples = load_data(str(image_folder)).split("val").samples
    assert metrics["n"] == len(samples) == 8
    paths = [path for path, _ in samples]
    eval_inputs = torch.cat(recorders["eval"].inputs)
    eval_logits = torch.cat(recorders["eval"].outputs)

    model = open_model(str(folder_weights)).model
    results, errors = predict(model, paths, top_k=5)
    assert not errors and [r.image for r in results] == paths
    predict_inputs = recorders["predict"].inputs
    predict_logits = recorders["predict"].outputs
    assert len(predict_inputs) == len(paths)

    # the eval transform as the dataset applies it, the tensors each path fed the model, bitwise
    dataset = ImageDataset(load_data(str(image_folder)).split("val"), model.preprocessing.transform())
    for i, path in enumerate(paths):
        fed = predict_inputs[i]
        assert fed.shape == (1, 3, 32, 32)
        assert torch.equal(fed[0], eval_inputs[i]), path
        assert torch.equal(dataset[i][0], eval_inputs[i]), path
        # Same inputs, bitwise; batch 1 vs 3 splits the float sums differently over 2 threads (run
        # alone, not under xdist's 1 thread each): 1.5e-5 relative on logits near 50 was measured.
        torch.testing.assert_close(predict_logits[i][0], eval_logits[i], rtol=1e-4, atol=1e-5)
        probs = torch.softmax(eval_logits[i].double(), 0)
        top = results[i].result["top"]
        assert [t["label"] for t in top] == [["cat", "dog"][t["index"]] for t in top]
        assert top[0]["index"] == int(eval_logits[i].argmax())
        for entry in top:
            assert entry["prob"] == pytest.approx(probs[entry["index"]].item(), abs=1e-5)
    assert eval_logits.std(0).max() > 1e-3  # the images give different logits: the comparison has teeth

    # eval's numbers are predict's top-1 against the labels
    labels = [label for _, label in samples]
    hits = sum(r.result["top"][0]["index"] == label for r, label in zip(results, labels, strict=True))
    assert metrics["top1"] == pytest.approx(hits / len(labels))
    assert [sum(row) for row in metrics["confusion"]] == [labels.count(0), labels.count(1)]


def test_eval_transform_is_the_models_preprocessing(folder_weights, image_folder):
    """The path is one: the transform is the weights' own preprocessing, not a default."""
    trained = load_trained(folder_weights)
    pre = trained.model.preprocessing
    assert (pre.resolution, pre.resize) == (32, 64)
    image = Image.open(image_folder / "val" / "cat" / "0.png").convert("RGB")
    out = pre.transform()(image)
    # resize the short side to 64 (40x57 -> 64x91), center-crop 32, scale and normalise, by hand
    x = TF.pil_to_tensor(image)
    x = TF.resize(x, [64, 91], interpolation=InterpolationMode.BICUBIC, antialias=True)
    x = x[:, 16:48, 30:62].float() / 255  # left = round((91 - 32) / 2)
    x = (x - torch.tensor(pre.mean).view(3, 1, 1)) / torch.tensor(pre.std).view(3, 1, 1)
    torch.testing.assert_close(out, x, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- (b) the data a file was trained on


def _write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


TRAIN_VALUES = np.arange(10, 30)  # one constant grey level per image: each image is recognisable
TEST_VALUES = np.arange(200, 210)
VAL_SPLIT, SEED = 0.25, 3


@pytest.fixture
def fmnist_dir(tmp_path):
    """A tiny Fashion-MNIST in a directory of its own: 20 training and 10 test images, each
    28x28 of one grey level, labels i % 10."""
    d = tmp_path / "fmnist"
    d.mkdir()
    for prefix, values in (("train", TRAIN_VALUES), ("t10k", TEST_VALUES)):
        images = np.repeat(values.astype(np.uint8), 28 * 28).reshape(len(values), 28, 28)
        _write_idx(d / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(d / f"{prefix}-labels-idx1-ubyte", (np.arange(len(values)) % 10).astype(np.uint8))
    return d


@pytest.fixture
def fmnist_weights(tmp_path, fmnist_dir):
    model = _small_model(10, list(FASHION_MNIST_CLASSES))
    training = {"data": "fashion-mnist", "data_dir": str(fmnist_dir), "val_split": VAL_SPLIT, "seed": SEED,
                "model": None, "phi": -3.0, "epochs": 1}  # fmt: skip
    return effnet.save(model, tmp_path / "fm.safetensors", extra_metadata={"training": json.dumps(training)})


def _grey_levels(batch: np.ndarray, pre) -> list[int]:
    """The grey level of each calibration image, undoing the normalisation."""
    batch = torch.as_tensor(batch)
    assert batch.shape[1:] == (3, 32, 32)
    raw = batch * torch.tensor(pre.std).view(1, 3, 1, 1) + torch.tensor(pre.mean).view(1, 3, 1, 1)
    levels = (raw * 255).round()
    assert (levels == levels[:, :1, :1, :1]).all()  # constant images stay constant
    return levels[:, 0, 0, 0].int().tolist()


def _expected_train_levels(fmnist_dir) -> set[int]:
    train = load_data("fashion-mnist", data_dir=fmnist_dir, val_split=VAL_SPLIT, seed=SEED).split("train")
    return set(train.images[:, 0, 0].tolist())


def test_provenance_of_an_image_folder(tmp_path, image_folder):
    model = _small_model(2, ["cat", "dog"])
    training = {"data": str(image_folder), "data_dir": None, "val_split": 0.3, "seed": 5}
    path = effnet.save(model, tmp_path / "m.safetensors", extra_metadata={"training": json.dumps(training)})
    provenance = load_trained(path).provenance
    assert provenance.data_options() == {"data": str(image_folder), "data_dir": None, "val_split": 0.3, "seed": 5}
    assert provenance.data_options(val_split=0.5, seed=1) == {
        "data": str(image_folder), "data_dir": None, "val_split": 0.5, "seed": 1,
    }  # fmt: skip
    # a file without training metadata says so rather than guessing
    bare = effnet.save(model, tmp_path / "bare.safetensors")
    assert load_trained(bare).provenance == Provenance()
    with pytest.raises(effnet.UsageError, match="--data"):
        load_trained(bare).provenance.data_options()


def test_provenance_keeps_the_data_dir_only_for_its_own_data(fmnist_weights, fmnist_dir, tmp_path):
    provenance = load_trained(fmnist_weights).provenance
    own = {"data": "fashion-mnist", "data_dir": str(fmnist_dir), "val_split": VAL_SPLIT, "seed": SEED}
    assert provenance.data_options() == own
    assert provenance.data_options("fashion-mnist") == own
    assert provenance.data_options("digits") == {"data": "digits", "data_dir": None, "val_split": VAL_SPLIT,
                                                 "seed": SEED}  # fmt: skip
    assert provenance.data_options("digits", data_dir=str(tmp_path))["data_dir"] == str(tmp_path)
    assert provenance.data_options(data_dir="/elsewhere")["data_dir"] == "/elsewhere"


def test_calibration_reads_the_provenance_directory(fmnist_weights, fmnist_dir):
    trained = load_trained(fmnist_weights)
    options = trained.provenance.data_options()
    pre = trained.model.preprocessing
    train_levels = _expected_train_levels(fmnist_dir)
    assert len(train_levels) == 15  # 20 images, a quarter held out for validation
    other_seed = load_data("fashion-mnist", data_dir=fmnist_dir, val_split=VAL_SPLIT, seed=0).split("train")
    assert set(other_seed.images[:, 0, 0].tolist()) != train_levels  # so the seed is seen to matter

    batches = quantize_module.calibration_batches(trained.model, options, n=100, batch_size=4, seed=0)
    assert [len(b) for b in batches] == [4, 4, 4, 3]  # every training image, and only those
    levels = [v for b in batches for v in _grey_levels(b, pre)]
    assert sorted(levels) == sorted(train_levels)

    few = quantize_module.calibration_batches(trained.model, options, n=6, batch_size=4, seed=1)
    assert [len(b) for b in few] == [4, 2]
    few_levels = [v for b in few for v in _grey_levels(b, pre)]
    assert len(set(few_levels)) == 6 and set(few_levels) <= train_levels


class _Stop(Exception):
    pass


def _stop_after_calibration(monkeypatch, seen: dict):
    real = quantize_module.calibration_batches

    def calibration(model, options, n, **kw):
        seen["options"] = options
        seen["batches"] = real(model, options, n, **kw)
        raise _Stop

    monkeypatch.setattr(quantize_module, "calibration_batches", calibration)


def test_quantize_calibrates_from_the_training_data_dir(monkeypatch, fmnist_weights, fmnist_dir, tmp_path):
    seen = {}
    _stop_after_calibration(monkeypatch, seen)
    with pytest.raises(_Stop):
        quantize_module.quantize(str(fmnist_weights), str(tmp_path / "int8.onnx"), calibration_images=8)
    assert seen["options"]["data_dir"] == str(fmnist_dir)
    assert (seen["options"]["val_split"], seen["options"]["seed"]) == (VAL_SPLIT, SEED)
    levels = [v for b in seen["batches"] for v in _grey_levels(b, load_trained(fmnist_weights).model.preprocessing)]
    assert len(levels) == 8 and set(levels) <= _expected_train_levels(fmnist_dir)


def test_eval_reads_the_training_data_dir(fmnist_weights, fmnist_dir):
    metrics = evaluate(str(fmnist_weights), batch_size=4)
    assert metrics["classes"] == list(FASHION_MNIST_CLASSES)
    assert metrics["n"] == len(TEST_VALUES)  # the tiny test split, not the real 10,000 images
    assert [sum(row) for row in metrics["confusion"]] == [1] * 10
    val = evaluate(str(fmnist_weights), split="val", batch_size=8)
    assert val["n"] == 5


def test_compression_pipeline_distils_from_the_training_data_dir(monkeypatch, fmnist_weights, fmnist_dir, tmp_path):
    seen = {}

    def train(cfg, run, **kw):
        seen["cfg"] = cfg
        raise _Stop

    monkeypatch.setattr(pipeline, "train", train)
    with pytest.raises(_Stop):
        pipeline.compress(str(fmnist_weights), tmp_path / "out", steps=["distill"], epochs=1)
    cfg = seen["cfg"]
    assert (cfg.data, cfg.data_dir, cfg.val_split) == ("fashion-mnist", str(fmnist_dir), VAL_SPLIT)
    assert cfg.teacher == str(fmnist_weights) and cfg.phi == -4.0  # the teacher's phi - 1
    assert not (tmp_path / "out").exists()


def test_pruning_fine_tunes_on_the_training_data_dir(monkeypatch, fmnist_weights, fmnist_dir, tmp_path):
    seen = {}

    class Trainer:
        def __init__(self, cfg, run, **kw):
            seen["cfg"] = cfg
            raise _Stop

    monkeypatch.setattr(prune_module, "trainer_class", lambda task: Trainer)
    with pytest.raises(_Stop):
        prune_module.prune(str(fmnist_weights), 0.5, str(tmp_path / "p.safetensors"), finetune_epochs=1)
    cfg = seen["cfg"]
    assert (cfg.data, cfg.data_dir, cfg.val_split) == ("fashion-mnist", str(fmnist_dir), VAL_SPLIT)


def test_a_pruned_file_keeps_its_provenance(fmnist_weights, fmnist_dir, tmp_path):
    """Without fine-tuning too: the pipeline's quantize step reads the pruned file's provenance."""
    out = tmp_path / "p.safetensors"
    prune_module.prune(str(fmnist_weights), 0.5, str(out), finetune_epochs=0)
    assert load_trained(out).provenance.data_options() == load_trained(fmnist_weights).provenance.data_options()


def test_pipeline_quantizes_a_pruned_model_from_the_training_data_dir(
    monkeypatch, fmnist_weights, fmnist_dir, tmp_path
):
    seen = {}
    _stop_after_calibration(monkeypatch, seen)
    with pytest.raises(_Stop):
        pipeline.compress(str(fmnist_weights), tmp_path / "out", steps=["prune", "quantize"], finetune_epochs=0,
                          calibration_images=8)  # fmt: skip
    assert seen["options"]["data_dir"] == str(fmnist_dir)
    assert (seen["options"]["val_split"], seen["options"]["seed"]) == (VAL_SPLIT, SEED)
