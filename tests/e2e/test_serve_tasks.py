"""``effnet serve`` for every task: a detector, a segmenter and an embedder answer over HTTP exactly
what ``effnet predict`` prints for the same file, on the engine asked for."""

import json

import pytest
import torch
from PIL import Image

import effnet
from effnet.tasks import create_detector, create_embedder, create_segmenter
from tests.conftest import import_required, run_cli
from tests.e2e.test_serve import browser, needs_chromium, server

httpx = import_required("httpx")

SIDE = 64


def _photo(path, side=SIDE):
    from skimage import data

    Image.fromarray(data.astronaut()).resize((side, side)).save(path)
    return path


def _detector():
    model = create_detector(phi=-3, num_classes=2, image_size=SIDE, class_names=["cat", "dog"])
    with torch.no_grad():  # an untrained detector sure of "cat" everywhere: detections to compare
        model.net.roi_heads.box_predictor.cls_score.bias.copy_(torch.tensor([-4.0, 6.0, -4.0]))
    return model


MODELS = {
    "detection": (_detector, "detections"),
    "segmentation": (lambda: create_segmenter(phi=-3, num_classes=3, image_size=SIDE), "pixels"),
    "embedding": (lambda: create_embedder(phi=-3, embedding_dim=16, resolution=SIDE), "embedding"),
}


@pytest.mark.parametrize(("task", "engine"), [("detection", "torch"), ("segmentation", "torch"),
                                              ("segmentation", "onnxruntime"), ("embedding", "torch")])  # fmt: skip
def test_every_task_is_served_as_effnet_predict_answers(tmp_path, task, engine):
    torch.manual_seed(0)
    build, key = MODELS[task]
    weights = effnet.save(build().eval(), tmp_path / f"{task}.safetensors")
    image = _photo(tmp_path / "photo.png")
    expected = json.loads(run_cli("predict", image, "--weights", weights, "--engine", engine, "--json")
                          .check().stdout)[0]  # fmt: skip
    assert expected[key], expected  # something to compare: boxes, pixel counts, a vector
    with server("--weights", weights, "--engine", engine, "--max-batch", 4) as (url, _):
        described = httpx.get(f"{url}/v1/model").json()
        assert described["task"] == task and described["engine"] == engine
        got = httpx.post(f"{url}/v1/predict", content=image.read_bytes(), headers={"Content-Type": "image/png"})
        assert got.status_code == 200, got.text
        answer = got.json()
        assert set(answer) == {key}
        if task == "embedding":
            assert answer[key] == pytest.approx(expected[key], abs=1e-4)
        elif task == "segmentation":
            counts = sum(answer[key].values())
            assert counts == SIDE * SIDE and answer[key].keys() == expected[key].keys()
            for name, n in expected[key].items():
                assert abs(answer[key][name] - n) <= 2, (name, answer[key], expected[key])
        else:
            assert [d["label"] for d in answer[key]] == [d["label"] for d in expected[key]]
            for a, b in zip(answer[key], expected[key], strict=True):
                assert a["box"] == pytest.approx(b["box"], abs=0.2)
                assert a["score"] == pytest.approx(b["score"], abs=1e-3)
        upload = [("images", (name, image.read_bytes(), "image/png")) for name in ("a.png", "b.png")]
        batch = httpx.post(f"{url}/v1/predict/batch", files=upload)
        assert batch.status_code == 200 and [set(r) for r in batch.json()["results"]] == [{"image", key}] * 2


@needs_chromium
@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_the_page_shows_boxes_and_pixel_shares(tmp_path, task):
    """The page in a real browser: a detector's boxes as rows (and drawn on the picture), a
    segmenter's share of pixels per class, as the API answers them."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    torch.manual_seed(0)
    build, key = MODELS[task]
    weights = effnet.save(build().eval(), tmp_path / f"{task}.safetensors")
    image = _photo(tmp_path / "photo.png")
    with server("--weights", weights) as (url, _):
        answer = httpx.post(f"{url}/v1/predict", content=image.read_bytes(), headers={"Content-Type": "image/png"})
        items = answer.json()[key]
        expected = ([(d["label"], f"{d['score']:.2f}") for d in items] if task == "detection" else
                    [(name, f"{100 * n / SIDE**2:.1f}%") for name, n in items.items()])  # fmt: skip
        driver = browser()
        try:
            driver.get(url + "/")
            WebDriverWait(driver, 30).until(lambda d: task in d.find_element(By.ID, "model").text)
            driver.find_element(By.ID, "file").send_keys(str(image))
            rows = lambda d: d.find_elements(By.CSS_SELECTOR, "#results .row")  # noqa: E731
            WebDriverWait(driver, 30).until(lambda d: len(rows(d)) == len(expected))
            shown = [(r.find_element(By.CLASS_NAME, "label").text, r.find_element(By.CLASS_NAME, "prob").text)
                     for r in rows(driver)]  # fmt: skip
            assert shown == expected and expected
            assert driver.find_element(By.ID, "preview").is_displayed()
        finally:
            driver.quit()
