"""The page of ``effnet serve`` in Debian's headless chromium, after uploading a Fashion-MNIST test
image: writes docs/serve_page.png (the README shows it).

    python benchmarks/serving/screenshot.py --weights runs/fmnist-fixed60/best.safetensors

Needs the chromium and chromium-driver packages (make test installs them)."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from load import start_server, stop_server  # this folder's load generator starts servers the same way
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from effnet.datasets.builtin import fashion_mnist

    parser = argparse.ArgumentParser()
    parser.add_argument("--weights", required=True)
    parser.add_argument("--index", type=int, default=0, help="which test image")
    parser.add_argument("--out", default=str(ROOT / "docs" / "serve_page.png"))
    args = parser.parse_args()

    test = fashion_mnist()[0]["test"]
    with tempfile.TemporaryDirectory() as scratch:
        image = Path(scratch) / f"fashion_mnist_test_{args.index}.png"
        Image.fromarray(test.images[args.index]).resize((112, 112), Image.NEAREST).save(image)
        server, url = start_server(Path(args.weights))
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=820,640"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            driver.get(url + "/")
            WebDriverWait(driver, 30).until(lambda d: "classes" in d.find_element(By.ID, "model").text)
            driver.find_element(By.ID, "file").send_keys(str(image))
            WebDriverWait(driver, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .row")) == 5)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(args.out)
        finally:
            driver.quit()
            stop_server(server)
    print(f"wrote {Path(args.out).relative_to(ROOT)} (true class: {test.labels[args.index]})")


if __name__ == "__main__":
    main()
