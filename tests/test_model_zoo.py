"""``ssn://`` names: the catalogue, the download cache, and loading through our ResNet, detectron2 and mmengine.

The releases cannot be reached from here, so a real HTTP server on 127.0.0.1 serves checkpoints written in the
published layouts; ``SSN_PLUGINS_MIRROR`` points the catalogue at it and ``SSN_PLUGINS_CACHE`` at a temporary
folder. The catalogue's checksums are the releases'; for the served files the tests put their MD5 in their place.
"""
import dataclasses
import os
import hashlib
import json
import http.server
import io
import re
import threading
from pathlib import Path

import pytest

pytest.importorskip("numpy")  # needs the full stack; a torch-only install runs the core tests

import numpy as np

import torch

import ssn_plugins as S
from ssn_plugins import model_zoo
from ssn_plugins.checkpoints import read_published, to_openmmlab
from ssn_plugins.models import ResNet

from helpers import (ce_release_layout, d2_resnet50, photo_batch, published_layout, trained_looking_ce_resnet,
                     trained_looking_resnet)

REPO = Path(__file__).resolve().parents[1]


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files`` with HTTP range requests; ``server.modes[name]`` makes a file misbehave."""

    def log_message(self, *args):  # keep the test output clean
        pass

    def do_GET(self):
        name = self.path.lstrip("/")
        self.server.requests.append((name, self.headers.get("Range")))
        mode = self.server.modes.get(name, "ok")
        if mode == "error":
            self.send_error(500, "Internal Server Error")
            return
        if mode == "html":
            body = b"<!DOCTYPE html><html><body>Google Drive can't scan this file for viruses.</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if name not in self.server.files:
            self.send_error(404, "Not Found")
            return
        data = self.server.files[name]
        if mode == "corrupt":
            data = data[:1000] + bytes([data[1000] ^ 0xFF]) + data[1001:]
        if mode == "html-as-binary":
            data = b"<!DOCTYPE html><html><body>Sign in</body></html>"
        start = 0
        ranged = self.headers.get("Range")
        if ranged and mode != "no-range":
            start = int(re.fullmatch(r"bytes=(\d+)-", ranged).group(1))
            if start >= len(data):
                self.send_error(416, "Range Not Satisfiable")
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if mode == "truncate-once":  # half the file, then the connection drops; the next request is served whole
            self.server.modes[name] = "ok"
            self.wfile.write(data[start:start + (len(data) - start) // 2])
            return
        self.wfile.write(data[start:])


@pytest.fixture(scope="module")
def published_files(tmp_path_factory):
    """Release-layout files for three catalogue names, and the models they were written from."""
    sn = trained_looking_resnet(50, "SN")
    ssn = trained_looking_resnet(50, "SSN", ceil=True)  # the SSN release's stem pooling, which read_published infers
    ce = trained_looking_ce_resnet()
    from mmdet.models.backbones import ResNet as MMResNet
    torch.manual_seed(0)
    gn = MMResNet(depth=50, norm_cfg=dict(type="GN", num_groups=32))  # as open-mmlab://detectron/resnet50_gn
    files = {}
    for name, obj in (("resnet50_sn_8x32", published_layout(sn)), ("resnet50_ssn_8x8", published_layout(ssn)),
                      ("resnet50_ce", ce_release_layout(ce)), ("resnet50_gn", {"state_dict": gn.state_dict()})):
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        files[f"{name}.pth"] = buffer.getvalue()
    return files, {"resnet50_sn_8x32": sn, "resnet50_ssn_8x8": ssn, "resnet50_ce": ce, "resnet50_gn": gn}


@pytest.fixture
def server(published_files, tmp_path, monkeypatch):
    """The local release server, a fresh cache, and the catalogue with the served files' MD5s."""
    files, _ = published_files
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.modes, httpd.requests = dict(files), {}, []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("SSN_PLUGINS_MIRROR", f"http://127.0.0.1:{httpd.server_address[1]}/")
    monkeypatch.setenv("SSN_PLUGINS_CACHE", str(tmp_path / "cache"))
    md5 = {name[:-4]: hashlib.md5(data).hexdigest() for name, data in files.items()}
    sha256 = {name[:-4]: hashlib.sha256(data).hexdigest()[:8] for name, data in files.items()}
    entries = {name: dataclasses.replace(e, md5=md5.get(name, e.md5) if e.md5 else None,
                                         sha256_prefix=sha256.get(name, e.sha256_prefix) if e.sha256_prefix else None)
               for name, e in model_zoo.catalogue().items()}
    monkeypatch.setattr(model_zoo, "catalogue", lambda: entries)
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def cached(tmp_path, *parts) -> Path:
    return tmp_path.joinpath("cache", "checkpoints", *parts)


def test_catalogue_lists_every_release_checkpoint():
    entries = model_zoo.catalogue()
    assert len(entries) == 20
    releases = {}
    for e in entries.values():
        releases.setdefault(e.release, []).append(e.name)
        assert (e.urls or e.parts) and e.by_hand and e.page.startswith("https://")
        assert all(u.startswith("https://") for u in e.urls + tuple(u for p in e.parts.values() for u in p["urls"]))
        assert e.architecture["depth"] in (50, 101) and e.architecture["norm"] in ("SN", "SSN", "BN", "GN")
    assert len(releases["SN"]) == 7 and len(releases["SSN"]) == 5 and releases["SN-segmentation"] == [
        "resnet50_sn_8x2", "ade20k_c1_deepsup_r50_d8_sn_8x2"] and releases["CE"] == ["resnet50_ce"]
    assert len(releases["SN-detection"]) == 4 and all(entries[n].task == "detection" for n in releases["SN-detection"])
    assert entries["mask_rcnn_R_50_FPN_2x_sn_8x1"].results == {"box AP": 41.01, "mask AP": 36.12}
    assert all(entries[n].licence == "CC-BY-NC 4.0" for n in releases["SN"])
    assert all(re.fullmatch(r"[0-9a-f]{32}", entries[n].md5) for n in releases["SSN"])  # the release lists them
    assert entries["resnet50_ssn_8x32"].md5 == "5c9fb111577b040e62461db51ffce69b"
    assert entries["resnet50_sn_8x1"].architecture["candidates"] == ["IN", "LN"]
    assert (entries["resnet101v2_sn_8x32"].top1, entries["resnet50_ce"].top1) == (78.81, 78.2)
    zoo_doc = (REPO / "MODEL_ZOO.md").read_text()
    for e in entries.values():  # MODEL_ZOO.md shows every name with its links
        assert f"`ssn://{e.name}`" in zoo_doc and e.by_hand[0] in zoo_doc, e.name


def test_names_and_layouts_are_checked_before_any_download(tmp_path, monkeypatch):
    monkeypatch.setenv("SSN_PLUGINS_CACHE", str(tmp_path))
    monkeypatch.setenv("SSN_PLUGINS_MIRROR", "http://127.0.0.1:9/")  # nothing may be fetched
    assert model_zoo.parse_url("ssn://i3d/resnet50_ssn_8x8", "openmmlab") == ("resnet50_ssn_8x8", "i3d")
    with pytest.raises(model_zoo.ModelZooError, match="did you mean resnet50_ssn_8x32"):
        model_zoo.local_path("ssn://resnet50_ssn_8x33")
    with pytest.raises(model_zoo.ModelZooError, match="unknown layout 'caffe2'"):
        model_zoo.local_path("ssn://caffe2/resnet50_ssn_8x32")
    with pytest.raises(model_zoo.ModelZooError, match="pre-activation.*ssn://torch/resnet50v2_sn_8x32"):
        model_zoo.local_path("ssn://resnet50v2_sn_8x32", default_layout="detectron2")
    with pytest.raises(model_zoo.ModelZooError, match="only the 'openmmlab' and 'i3d'"):
        model_zoo.local_path("ssn://detectron2/resnet50_gn")
    with pytest.raises(ValueError, match="reads the 'torch' layout"):
        S.from_pretrained("ssn://i3d/resnet50_ssn_8x8")
    assert not any(tmp_path.rglob("*.pth*"))


def test_download_checks_converts_caches_and_then_works_offline(server, published_files, tmp_path, monkeypatch,
                                                                 capfd):
    _, models = published_files
    model = S.from_pretrained("resnet50_sn_8x32")
    err = capfd.readouterr().err
    assert "downloading ssn://resnet50_sn_8x32" in err and "converted for torch" in err
    assert server.requests == [("resnet50_sn_8x32.pth", None)]
    assert cached(tmp_path, "downloads", "resnet50_sn_8x32.pth").exists()
    assert not list(cached(tmp_path).rglob("*.part"))
    x = photo_batch()
    torch.testing.assert_close(model(x), models["resnet50_sn_8x32"](x))
    assert not model.training and all(m.official_compat for m in model.modules() if isinstance(m, S.SwitchNorm))
    # later uses need no network: the server is gone
    monkeypatch.setenv("SSN_PLUGINS_MIRROR", "http://127.0.0.1:9/")
    again = S.from_pretrained("ssn://resnet50_sn_8x32", backbone_only=True)
    torch.testing.assert_close(again(x), models["resnet50_sn_8x32"].stages(x)["res5"])
    assert len(server.requests) == 1


def test_a_corrupted_download_is_deleted_and_named(server, tmp_path):
    server.modes["resnet50_ssn_8x8.pth"] = "corrupt"
    with pytest.raises(model_zoo.ModelZooError) as error:
        model_zoo.local_path("ssn://resnet50_ssn_8x8")
    message = str(error.value)
    assert "cannot download ssn://resnet50_ssn_8x8" in message and "its MD5 is" in message and "deleted" in message
    assert "drive.google.com/open?id=18HXLmZVB5JF_TcneEMHXtCo1RQt17fYC" in message  # where to get it by hand
    assert str(cached(tmp_path, "downloads", "resnet50_ssn_8x8.pth")) in message  # and where to put it
    assert not list(cached(tmp_path).rglob("*.pth*"))


def test_an_interrupted_download_resumes_from_its_partial_file(server, published_files, tmp_path):
    files, models = published_files
    size = len(files["resnet50_ssn_8x8.pth"])
    server.modes["resnet50_ssn_8x8.pth"] = "truncate-once"
    with pytest.raises(model_zoo.ModelZooError, match="kept and the next attempt resumes it"):
        model_zoo.local_path("ssn://resnet50_ssn_8x8")
    part = cached(tmp_path, "downloads", "resnet50_ssn_8x8.pth.part")
    assert part.stat().st_size == size // 2  # the partial file, never under the final name
    assert not cached(tmp_path, "downloads", "resnet50_ssn_8x8.pth").exists()
    path = model_zoo.local_path("ssn://resnet50_ssn_8x8")
    assert server.requests[-1] == ("resnet50_ssn_8x8.pth", f"bytes={size // 2}-")  # resumed, not restarted
    assert hashlib.md5(cached(tmp_path, "downloads", "resnet50_ssn_8x8.pth").read_bytes()).hexdigest() == \
        hashlib.md5(files["resnet50_ssn_8x8.pth"]).hexdigest()
    saved = torch.load(path, weights_only=True)
    assert saved["meta"]["ssn_plugins"]["ceil_mode_pool"]  # the SSN release's stem
    expected = models["resnet50_ssn_8x8"].state_dict()
    for key in ("layer2.1.sn2.mean_weight", "layer3.0.sn1.running_var", "sn1.radius"):
        torch.testing.assert_close(saved["state_dict"][key], expected[key])


def test_a_server_that_ignores_the_range_sends_the_whole_file_again(server, published_files, tmp_path):
    files, _ = published_files
    part = cached(tmp_path, "downloads", "resnet50_ssn_8x8.pth.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"stale bytes of an older attempt")
    server.modes["resnet50_ssn_8x8.pth"] = "no-range"
    model_zoo.local_path("ssn://resnet50_ssn_8x8")
    assert cached(tmp_path, "downloads", "resnet50_ssn_8x8.pth").read_bytes() == files["resnet50_ssn_8x8.pth"]


@pytest.mark.parametrize("mode,expected", [("error", "HTTP 500 Internal Server Error"),
                                           ("html", "sent an HTML page, not a checkpoint")])
def test_a_server_error_or_an_html_page_leaves_nothing(server, tmp_path, mode, expected):
    server.modes["resnet50_sn_8x32.pth"] = mode
    with pytest.raises(model_zoo.ModelZooError, match=expected) as error:
        model_zoo.local_path("ssn://resnet50_sn_8x32")
    assert "to place it by hand" in str(error.value)
    assert not list(cached(tmp_path).rglob("*.pth*"))


def test_an_unchecked_release_file_that_is_a_web_page_is_refused(server, tmp_path):
    """The SN release lists no MD5: a sign-in page sent as a binary is still recognised and deleted."""
    assert model_zoo.catalogue()["resnet50_sn_8x32"].md5 is None
    server.modes["resnet50_sn_8x32.pth"] = "html-as-binary"
    with pytest.raises(model_zoo.ModelZooError, match="it is an HTML page, not a checkpoint"):
        model_zoo.local_path("ssn://resnet50_sn_8x32")
    assert not list(cached(tmp_path).rglob("*.pth*"))


def test_no_network_gives_one_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("SSN_PLUGINS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SSN_PLUGINS_MIRROR", "http://127.0.0.1:9/")  # the discard port: nothing listens
    with pytest.raises(model_zoo.ModelZooError, match="cannot connect .*no network") as error:
        model_zoo.local_path("ssn://resnet50_ssn_8x32")
    assert f"save it as {cached(tmp_path, 'downloads', 'resnet50_ssn_8x32.pth')}" in str(error.value)


def test_a_file_placed_by_hand_is_used(published_files, tmp_path, monkeypatch):
    files, models = published_files
    monkeypatch.setenv("SSN_PLUGINS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SSN_PLUGINS_MIRROR", "http://127.0.0.1:9/")
    target = cached(tmp_path, "downloads", "resnet50_ce.pth")
    target.parent.mkdir(parents=True)
    target.write_bytes(files["resnet50_ce.pth"])
    model = S.from_pretrained("resnet50_ce", progress=False)
    assert model.ce1.group_size == 64 and model.layer1[0].ce.group_size == 16
    x = photo_batch()
    torch.testing.assert_close(model(x), models["resnet50_ce"](x))
    # a file placed by hand that fails the release's MD5 is set aside, not used and not deleted
    wrong = cached(tmp_path, "downloads", "resnet50_ssn_8x16.pth")
    wrong.write_bytes(files["resnet50_ce.pth"])
    with pytest.raises(model_zoo.ModelZooError,
                       match="its MD5 is .* the release lists d7085632529a9b1945a28a4d3bf4cacb"):
        model_zoo.local_path("ssn://resnet50_ssn_8x16")
    assert not wrong.exists() and wrong.with_name("resnet50_ssn_8x16.pth.rejected").exists()
    # the SN release lists no MD5: a truncated file is caught by loading, and set aside too
    truncated = cached(tmp_path, "downloads", "resnet50_sn_8x32.pth")
    truncated.write_bytes(files["resnet50_sn_8x32.pth"][:100_000])
    with pytest.raises(model_zoo.ModelZooError, match="cannot be converted for torch: .*not a readable checkpoint"):
        S.from_pretrained("resnet50_sn_8x32", progress=False)
    assert not truncated.exists() and truncated.with_name("resnet50_sn_8x32.pth.rejected").exists()


def test_a_file_of_another_network_under_a_name_without_checksum_is_refused(published_files, tmp_path, monkeypatch):
    """The SN releases list no checksum: the catalogue's architecture is what identifies the file (R11)."""
    files, _ = published_files
    monkeypatch.setenv("SSN_PLUGINS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SSN_PLUGINS_MIRROR", "http://127.0.0.1:9/")
    downloads = cached(tmp_path, "downloads")
    downloads.mkdir(parents=True)
    buffer = io.BytesIO()
    torch.save(published_layout(trained_looking_resnet(18, "SN")), buffer)
    (downloads / "resnet50_sn_8x4.pth").write_bytes(buffer.getvalue())   # a valid SN release file, but a ResNet-18
    (downloads / "resnet50_sn_8x1.pth").write_bytes(files["resnet50_sn_8x32.pth"])  # [IN, LN, BN] as the [IN, LN] one
    with pytest.raises(model_zoo.ModelZooError, match=r"is not ssn://resnet50_sn_8x4's network: depth 18 \(the "
                                                      r"catalogue's 50\).*moved to"):
        S.from_pretrained("resnet50_sn_8x4", progress=False)
    with pytest.raises(model_zoo.ModelZooError, match=r"candidates \('IN', 'LN', 'BN'\) \(the catalogue's "
                                                      r"\('IN', 'LN'\)\)"):
        model_zoo.local_path("ssn://detectron2/resnet50_sn_8x1")
    assert not (downloads / "resnet50_sn_8x4.pth").exists() and (downloads / "resnet50_sn_8x4.pth.rejected").exists()
    assert not list(cached(tmp_path, "converted").glob("*.p*"))


def test_detectron2_loads_ssn_weights(server, published_files):
    """``MODEL.WEIGHTS: ssn://NAME`` through detectron2's own ``DetectionCheckpointer``."""
    import ssn_plugins.detectron2  # noqa: F401  (registers the ssn:// handler)
    from detectron2.checkpoint import DetectionCheckpointer

    _, models = published_files
    d2 = d2_resnet50(S.SwitchNorm2d)
    DetectionCheckpointer(d2).load("ssn://resnet50_sn_8x32")
    d2.eval()
    x = photo_batch()
    ours, theirs = models["resnet50_sn_8x32"].stages(x), d2(x)
    for name in ("res2", "res3", "res4", "res5"):
        torch.testing.assert_close(theirs[name], ours[name], rtol=1e-4, atol=1e-4, msg=name)


def test_mmengine_loads_ssn_checkpoints(server, published_files):
    """``init_cfg=dict(type='Pretrained', checkpoint='ssn://NAME')`` and mmaction2's ``pretrained='ssn://i3d/NAME'``
    give the converter's output."""
    import ssn_plugins.openmmlab  # noqa: F401  (registers the ssn:// scheme)
    from mmaction.models.backbones import ResNet3d
    from mmdet.models.backbones import ResNet as MMResNet

    _, models = published_files
    mm = MMResNet(depth=50, norm_cfg=dict(type="SN"), style="pytorch", out_indices=(0, 1, 2, 3),
                  init_cfg=dict(type="Pretrained", checkpoint="ssn://resnet50_sn_8x32"))
    mm.init_weights()
    mm.eval()
    expected = to_openmmlab(read_published(published_layout(models["resnet50_sn_8x32"]), ceil_mode_pool=False))[0]
    for key, value in expected["state_dict"].items():
        torch.testing.assert_close(mm.state_dict()[key], value, msg=key)
    x = photo_batch()
    for name, feature in zip(("res2", "res3", "res4", "res5"), mm(x)):
        torch.testing.assert_close(feature, models["resnet50_sn_8x32"].stages(x)[name], rtol=1e-4, atol=1e-4)

    i3d = ResNet3d(depth=50, pretrained="ssn://i3d/resnet50_ssn_8x8", pretrained2d=False,
                   norm_cfg=dict(type="SSN3d"), conv1_kernel=(5, 7, 7), conv1_stride_t=2, pool1_stride_t=2,
                   inflate=S.checkpoints.I3D_R50_INFLATE, zero_init_residual=False)
    i3d.init_weights()
    ssn = models["resnet50_ssn_8x8"]
    assert [m.selection for m in S.sparse_layers(i3d)] == [m.selection for m in S.sparse_layers(ssn)]
    torch.testing.assert_close(i3d.conv1.conv.weight.sum(2), ssn.conv1.weight)
    torch.testing.assert_close(i3d.layer4[2].conv3.bn.mean_weight, ssn.layer4[2].sn3.mean_weight)


def test_the_openmmlab_gn_model_is_checked_by_its_sha256_and_inflated_for_i3d(server, published_files, tmp_path):
    """ssn://resnet50_gn: OpenMMLab's file as it is for OpenMMLab, inflated for the GN I3D baseline."""
    from mmaction.models.backbones import ResNet3d

    files, models = published_files
    assert model_zoo.local_path("ssn://resnet50_gn", "openmmlab").read_bytes() == files["resnet50_gn.pth"]
    i3d = ResNet3d(depth=50, pretrained="ssn://i3d/resnet50_gn", pretrained2d=False,
                   norm_cfg=dict(type="GN", num_groups=32), conv1_kernel=(5, 7, 7), conv1_stride_t=2,
                   pool1_stride_t=2, inflate=S.checkpoints.I3D_R50_INFLATE)
    result = i3d.load_state_dict(torch.load(model_zoo.local_path("ssn://i3d/resnet50_gn"), weights_only=True)
                                 ["state_dict"], strict=True)
    assert not result.missing_keys
    torch.testing.assert_close(i3d.layer2[0].conv1.conv.weight.sum(2), models["resnet50_gn"].layer2[0].conv1.weight)
    server.modes["resnet50_gn.pth"] = "corrupt"
    cached(tmp_path, "downloads", "resnet50_gn.pth").unlink()
    cached(tmp_path, "converted", "resnet50_gn_i3d.pth").unlink()
    with pytest.raises(model_zoo.ModelZooError, match="its SHA-256 starts"):
        model_zoo.local_path("ssn://i3d/resnet50_gn")


_READ_ONLY_USE = """
import dataclasses, json, sys
from ssn_plugins import model_zoo
sums = json.loads(sys.argv[1])  # the served files' checksums, as the server fixture puts them in the catalogue
entries = {n: dataclasses.replace(e, md5=sums[n][0] if n in sums and e.md5 else e.md5,
                                  sha256_prefix=sums[n][1] if n in sums and e.sha256_prefix else e.sha256_prefix)
           for n, e in model_zoo.catalogue().items()}
model_zoo.catalogue = lambda: entries
out = {"gn": str(model_zoo.local_path("ssn://resnet50_gn", "openmmlab")),
       "sn": str(model_zoo.local_path("ssn://resnet50_sn_8x32"))}
try:
    model_zoo.local_path("ssn://detectron2/resnet50_sn_8x32")
    out["d2"] = "no error"
except model_zoo.ModelZooError as e:
    out["d2"] = str(e)
print(json.dumps(out))
"""


def test_the_cache_repairs_a_damaged_conversion_works_read_only_and_names_an_unusable_root(server, published_files,
                                                                                          tmp_path, monkeypatch, capfd):
    """R15: a converted file damaged later is converted again; a complete read-only cache serves what it holds and
    says why it cannot convert the rest; a cache root that cannot be made is one ModelZooError."""
    import shutil
    import stat
    import subprocess
    import sys
    converted = model_zoo.local_path("ssn://resnet50_sn_8x32")
    intact = converted.read_bytes()
    converted.write_bytes(intact[: len(intact) // 2])  # damaged on disk after the fact
    capfd.readouterr()
    assert model_zoo.local_path("ssn://resnet50_sn_8x32") == converted and converted.read_bytes() == intact
    assert "no longer matches the digest recorded when it was converted" in capfd.readouterr().err
    assert model_zoo.local_path("ssn://resnet50_gn", "openmmlab").exists()
    assert len(server.requests) == 2
    # the cache made read-only (a shared cluster cache), used by a process that file modes stop: as root,
    # one without the capability to override them
    files, _ = published_files
    sums = {n[:-4]: (hashlib.md5(d).hexdigest(), hashlib.sha256(d).hexdigest()[:8]) for n, d in files.items()}
    command = [sys.executable, "-c", _READ_ONLY_USE, json.dumps(sums)]
    if os.geteuid() == 0:
        assert shutil.which("setpriv"), "util-linux's setpriv is needed to drop root's file-mode override"
        command = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--", *command]
    root = cached(tmp_path)
    folders = [root, *[p for p in root.rglob("*") if p.is_dir()]]
    try:
        for folder in folders:
            folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO,
                                env={**os.environ, "PYTHONPATH": str(REPO), "SSN_PLUGINS_MIRROR": "http://127.0.0.1:9/"})
    finally:
        for folder in folders:
            folder.chmod(stat.S_IRWXU)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.splitlines()[-1])
    assert out["gn"].endswith("downloads/resnet50_gn.pth") and out["sn"] == str(converted)  # served as they are
    assert re.search(r"cache .* cannot be written \(Permission denied.*SSN_PLUGINS_WEIGHTS", out["d2"]), out["d2"]
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("SSN_PLUGINS_CACHE", str(blocker / "cache"))  # under a file: cannot be created
    with pytest.raises(model_zoo.ModelZooError, match="cannot be written"):
        model_zoo.local_path("ssn://resnet50_sn_8x32")


def test_a_write_that_stops_short_says_the_disk_may_be_full(tmp_path):
    import subprocess
    import sys
    script = (f"import resource, signal, torch; from ssn_plugins.checkpoints import save_atomically, ConversionError\n"
              f"signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              f"resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))\n"
              f"try: save_atomically({{'w': torch.zeros(100000)}}, {str(tmp_path / 'x.pth')!r})\n"
              f"except ConversionError as e: print(e)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}).stdout
    assert "cannot write" in out and "the write stopped short" in out and "ulimit -f" in out, out
    assert not list(tmp_path.iterdir())  # no temporary file left (the file-size limit is the child's alone)


def test_shipped_configs_name_published_checkpoints_by_ssn_names():
    """Every config that starts from a published checkpoint names it ssn://NAME with a catalogue name."""
    names, found = set(model_zoo.catalogue()), []
    for path in sorted((REPO / "configs").rglob("*")):
        if path.suffix not in (".py", ".yaml"):
            continue
        code = re.sub(r"#.*", "", path.read_text())  # comments may mention how a file was made
        assert "converted/" not in code, path
        for url in re.findall(r"ssn://[\w/]+", code):
            name, _ = model_zoo.parse_url(url, "openmmlab")
            assert name in names
            found.append(path.name)
    assert len(set(found)) >= 20  # the others inherit theirs (2x from 1x, syncssn from ssn, ...)


def _reference_preprocessing(path: Path) -> torch.Tensor:
    """The releases' evaluation written out with PIL: shorter side to 256 (bilinear), centre 224 crop, normalise."""
    from PIL import Image

    image = Image.open(path).convert("RGB")
    w, h = image.size
    size = (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)
    image = image.resize(size, Image.BILINEAR)
    left, top = int(round((size[0] - 224) / 2.0)), int(round((size[1] - 224) / 2.0))
    x = torch.from_numpy(np.asarray(image.crop((left, top, left + 224, top + 224)), dtype=np.float32))
    x = x.permute(2, 0, 1) / 255
    return (x - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor([0.229, 0.224, 0.225])[:, None, None]


def test_eval_imagenet_tool_reports_accuracy_beside_the_published_figure(server, tmp_path):
    """tools/eval_imagenet.py on a small real ImageFolder (1000 class folders, four holding real photo crops) gives
    the top-1 / top-5 of an independent evaluation and prints the release's figure beside it. Each crop is filed
    under the class the model ranks 1st, 1st, 3rd and 10th on the independent preprocessing, so the expected
    result, 50 % / 75 %, holds only if the tool crops, normalises and labels exactly so."""
    import shutil
    import subprocess
    import sys
    from PIL import Image

    from helpers import photo_path
    from ssn_plugins.datasets.real_mini import load_annotated_images

    def eval_imagenet(*argv):  # the tool as a user runs it (the model comes from this test's cache)
        return subprocess.run([sys.executable, str(REPO / "tools" / "eval_imagenet.py"), *argv],
                              capture_output=True, text=True, timeout=600)

    photos = [Image.open(photo_path()).convert("RGB"),
              Image.fromarray(next(s for s in load_annotated_images() if s.name == "voc").image)]
    staging = tmp_path / "staging"
    staging.mkdir()
    crops = []
    for i, (photo, box) in enumerate([(p, b) for p in photos for b in ((0, 0, 300, 260), (40, 30, 330, 400))]):
        photo.crop(box).save(staging / f"crop{i}.jpg", quality=95)
        crops.append(staging / f"crop{i}.jpg")
    model = S.from_pretrained("resnet50_sn_8x32", progress=False)
    with torch.no_grad():
        order = model(torch.stack([_reference_preprocessing(p) for p in crops])).argsort(1, descending=True)
    folder = tmp_path / "val"
    for label in range(1000):
        (folder / f"n{label:08d}").mkdir(parents=True)
    for crop, ranks, rank in zip(crops, order, (0, 0, 2, 9)):
        shutil.copy(crop, folder / f"n{int(ranks[rank]):08d}" / crop.name)
    done = eval_imagenet("resnet50_sn_8x32", str(folder), "--batch-size", "3", "--workers", "0",
                         "--json", str(tmp_path / "result.json"))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert (result["images"], result["top1"], result["top5"]) == (4, 50.0, 75.0)
    assert "published (SN release, ssn://resnet50_sn_8x32): top-1 76.92 %, top-5 93.26 %" in done.stdout
    assert result["published_top1"] == 76.92
    small = tmp_path / "small"
    for label in range(3):
        (small / f"c{label}").mkdir(parents=True)
    photos[0].save(small / "c0" / "a.jpg")
    refused = eval_imagenet("resnet50_sn_8x32", str(small), "--workers", "0")
    assert refused.returncode != 0 and "has 3 class folders, the model 1000 outputs" in refused.stderr


def test_eval_imagenet_says_in_one_line_why_it_cannot_evaluate(tmp_path):
    """Converted OpenMMLab / detectron2 files, a damaged meta, an unreadable JPEG, a zero batch size: one line each,
    naming the file and the way on, never a traceback (R14)."""
    import pickle
    import subprocess
    import sys
    from PIL import Image

    from helpers import photo_path
    from ssn_plugins.checkpoints import to_layout as convert

    def eval_imagenet(*argv):
        return subprocess.run([sys.executable, str(REPO / "tools" / "eval_imagenet.py"), *map(str, argv),
                               "--no-progress"], capture_output=True, text=True, timeout=600)

    published = read_published(published_layout(trained_looking_resnet(18, "SSN")))
    torch_file, mm_file, d2_file = tmp_path / "r18.pth", tmp_path / "r18_mm.pth", tmp_path / "r18_d2.pkl"
    torch.save(convert(published, "torch")[0], torch_file)
    torch.save(convert(published, "openmmlab")[0], mm_file)
    with open(d2_file, "wb") as f:
        pickle.dump({k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in
                     convert(published, "detectron2")[0].items()}, f)
    state = convert(published, "torch")[0]["state_dict"]
    torch.save({"state_dict": state, "meta": {"ssn_plugins": "resnet18"}}, tmp_path / "wrong_type.pth")
    torch.save({"state_dict": state, "meta": {"ssn_plugins": {"depth": 18}}}, tmp_path / "missing_key.pth")
    val = tmp_path / "val"
    for label in range(1000):
        (val / f"n{label:08d}").mkdir(parents=True)
    Image.open(photo_path()).convert("RGB").save(val / "n00000000" / "good.jpg")
    (val / "n00000001" / "broken.jpg").write_bytes(b"not a jpeg")
    expected = {
        (mm_file,): "a backbone without the classifier (tools/convert_checkpoint.py's _mm.pth",
        (d2_file,): "a detectron2 .pkl is for MODEL.WEIGHTS",
        (tmp_path / "wrong_type.pth",): "meta['ssn_plugins'] holds a str",
        (tmp_path / "missing_key.pth",): "meta['ssn_plugins'] does not describe a network (KeyError",
        (torch_file, "--workers", "2"): "broken.jpg: not a readable image (UnidentifiedImageError",
        (torch_file, "--batch-size", "0"): "--batch-size: must be at least 1, got 0",
    }
    for args, fragment in expected.items():
        result = eval_imagenet(args[0], val, *args[1:])
        assert result.returncode != 0 and fragment in result.stderr and "Traceback" not in result.stderr, \
            (args, result.stderr[-2000:])
        assert "--trust-pickle" not in result.stderr
    (val / "n00000001" / "broken.jpg").unlink()
    done = eval_imagenet(torch_file, val, "--workers", "0")
    assert done.returncode == 0 and "on 1 images" in done.stdout, done.stderr[-2000:]


def test_a_file_that_fails_the_checksum_has_a_documented_route(tmp_path, monkeypatch, capsys):
    """A re-saved copy of a release file cannot match its MD5: ``tools/place_checkpoint.py --skip-checksum`` places
    it, every use says it is unchecked, and what was converted from an earlier copy is not reused."""
    import subprocess
    import sys

    monkeypatch.setenv("SSN_PLUGINS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SSN_PLUGINS_MIRROR", "http://127.0.0.1:9/")  # nothing may be fetched
    model = trained_looking_resnet(50, "SSN", ceil=True)
    resaved = tmp_path / "my_resave.pth"
    torch.save(published_layout(model), resaved)
    name = "resnet50_ssn_8x32"  # the release lists an MD5, which this file cannot have
    with pytest.raises(model_zoo.ModelZooError, match=r"its MD5 is .*--skip-checksum"):
        model_zoo.place_file(name, resaved)
    # placed by hand under the trusted name instead: set aside, and the message names the route
    target = cached(tmp_path, "downloads", f"{name}.pth")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(resaved.read_bytes())
    with pytest.raises(model_zoo.ModelZooError, match=rf"to use this file anyway: python tools/place_checkpoint\.py "
                                                      rf"{name} .*\.rejected --skip-checksum"):
        model_zoo.local_path(f"ssn://{name}")
    env = {**os.environ, "SSN_PLUGINS_CACHE": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "tools/place_checkpoint.py", name, str(resaved), "--skip-checksum"],
                            cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0 and "unchecked" in result.stdout, result.stderr
    capsys.readouterr()
    path = model_zoo.local_path(f"ssn://{name}")
    assert "is used unchecked (placed from" in capsys.readouterr().err
    loaded = ResNet(50, "SSN", ceil_mode_pool=True)
    loaded.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
    torch.testing.assert_close(loaded.layer1[0].conv1.weight, model.layer1[0].conv1.weight)
    # placing another copy drops the conversion of the first
    other = trained_looking_resnet(50, "SSN", ceil=True)
    with torch.no_grad():
        other.conv1.weight.mul_(2)
    torch.save(published_layout(other), resaved)
    model_zoo.place_file(name, resaved, skip_checksum=True)
    assert not path.exists()
    loaded.load_state_dict(torch.load(model_zoo.local_path(f"ssn://{name}"), weights_only=True)["state_dict"])
    torch.testing.assert_close(loaded.conv1.weight, other.conv1.weight)
    with pytest.raises(model_zoo.ModelZooError, match="no part 'encoder'"):
        model_zoo.place_file(name, resaved, part="encoder")


def test_a_shared_weights_cache_apart_from_the_environments(server, tmp_path, monkeypatch):
    monkeypatch.setenv("SSN_PLUGINS_WEIGHTS", str(tmp_path / "shared"))
    umask = os.umask(0o002)  # a group-shared folder's usual umask
    try:
        path = model_zoo.local_path("ssn://resnet50_sn_8x32")
    finally:
        os.umask(umask)
    assert path.is_relative_to(tmp_path / "shared") and not (tmp_path / "cache" / "checkpoints").exists()
    for written in (path, tmp_path / "shared" / "downloads" / "resnet50_sn_8x32.pth"):
        assert written.stat().st_mode & 0o777 == 0o664, oct(written.stat().st_mode)  # the group can read it
