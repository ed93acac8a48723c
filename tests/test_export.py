"""ONNX export (``detector/export.py``) and the onnxruntime backend (``detector/onnx_backend.py``).

The shipped weights are exported once per module (about 10 s); a P-Net without its landmark head
is exported on its own. CPU only, no network.
"""

import hashlib
import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from core.nets import INPUT_SIZES, NET_NAMES, PIXEL_MEAN, PIXEL_SCALE, build_net, normalize_images
from core.weights import load_nets, resolve_weights
from detector.cascade import PNET_CELL, PNET_STRIDE, DetectorConfig, load_detector
from detector.detect import DetectConfig, main as detect_main
from detector.export import ExportConfig, main as export_main
from child_env import REPO

TOLERANCE = 1e-4


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("export") / "shipped"
    assert export_main(ExportConfig(out=str(folder), weights="shipped")) == 0
    return folder


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage.data import astronaut as load

    return load()


def run_onnx(path: Path, images: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images})


@pytest.mark.parametrize("name", NET_NAMES)
def test_each_net_round_trips_through_onnxruntime(exported, name):
    nets = load_nets(resolve_weights("shipped"))
    rng = np.random.default_rng(3)
    size = INPUT_SIZES[name]
    # P-Net at two sizes (an export fixed to the traced size fails the second); batch 2 throughout.
    shapes = [(2, 12, 12), (2, 75, 131)] if name == "pnet" else [(2, size, size), (1, size, size)]
    for n, h, w in shapes:
        images = normalize_images(rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8))
        with torch.inference_mode():
            want = [t.numpy() for t in nets[name](images)]
        got = run_onnx(exported / f"{name}.onnx", images.numpy())
        assert len(got) == len(want) == 3  # logits, box, landmarks: the shipped nets have every head
        for w_out, g_out in zip(want, got):
            assert g_out.shape == w_out.shape
            assert np.abs(g_out - w_out).max() < TOLERANCE


def test_manifest_states_what_the_cascade_needs(exported):
    doc = json.loads((exported / "mtcnn.json").read_text())
    assert doc["format"] == "mtcnn-onnx/1" and doc["weights"] == "shipped"
    assert doc["input"]["normalisation"]["mean"] == PIXEL_MEAN and doc["input"]["normalisation"]["scale"] == PIXEL_SCALE
    assert doc["input"]["channels"] == "RGB" and doc["input"]["layout"].startswith("NCHW")
    assert doc["pnet"]["stride"] == PNET_STRIDE and doc["pnet"]["cell"] == PNET_CELL
    expected = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(DetectorConfig()).items()
                if k not in ("device", "batch_size")}
    assert doc["cascade"] == {**expected, "pnet_regression": "inclusive"}
    for name in NET_NAMES:
        entry = doc["nets"][name]
        data = (exported / entry["file"]).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["landmark_head"] is True and list(entry["outputs"]) == ["logits", "box", "landmarks"]
        model = onnx.load_from_string(data)
        assert model.opset_import[0].version == doc["opset"]
        dims = model.graph.input[0].type.tensor_type.shape.dim
        dynamic = [bool(d.dim_param) for d in dims]
        assert dynamic == ([True, False, True, True] if name == "pnet" else [True, False, False, False])
        assert [o.name for o in model.graph.output] == ["logits", "box", "landmarks"]
    assert not [p.name for p in exported.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_export_is_deterministic(exported, tmp_path):
    # Only P-Net, to keep it short: same weights, same bytes.
    folder = tmp_path / "w"
    folder.mkdir()
    (folder / "pnet.pt").write_bytes((REPO / "weights" / "pnet.pt").read_bytes())
    assert export_main(ExportConfig(out=str(tmp_path / "again"), weights=str(folder))) == 0
    assert (tmp_path / "again" / "pnet.onnx").read_bytes() == (exported / "pnet.onnx").read_bytes()
    assert list(json.loads((tmp_path / "again" / "mtcnn.json").read_text())["nets"]) == ["pnet"]


def test_onnx_cascade_finds_the_same_face_as_torch(exported, astronaut):
    torch_detector = load_detector("shipped")
    onnx_detector = load_detector(str(exported), backend="onnx", threads=1)
    assert onnx_detector.cfg.pnet_regression == torch_detector.cfg.pnet_regression == "inclusive"
    for image in (astronaut, astronaut[40:300, 100:380]):
        want, got = torch_detector.detect_stages(image), onnx_detector.detect_stages(image)
        for stage in NET_NAMES:
            assert len(got[stage]) == len(want[stage]) > 0
            assert np.abs(got[stage].boxes - want[stage].boxes).max() < 0.5
            assert np.abs(got[stage].landmarks - want[stage].landmarks).max() < 0.5
            np.testing.assert_allclose(got[stage].scores, want[stage].scores, atol=1e-4)
    batch = onnx_detector.detect_batch([astronaut, astronaut[::2, ::2]])
    np.testing.assert_allclose(batch[0].boxes, onnx_detector.detect(astronaut).boxes, atol=1e-3)


def test_pnet_without_landmark_head(tmp_path):
    torch.manual_seed(0)
    folder = tmp_path / "w"
    folder.mkdir()
    net = build_net("pnet", landmark_head=False)
    torch.save(net.state_dict(), folder / "pnet.pt")
    assert export_main(ExportConfig(out=str(tmp_path / "x"), weights=str(folder))) == 0
    doc = json.loads((tmp_path / "x" / "mtcnn.json").read_text())
    assert doc["nets"]["pnet"]["landmark_head"] is False and list(doc["nets"]["pnet"]["outputs"]) == ["logits", "box"]
    detector = load_detector(str(tmp_path / "x"), DetectorConfig(thresholds=(0.0, 0.0, 0.0)), backend="onnx")
    assert detector.stages == ("pnet",)
    found = detector.detect(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    assert len(found) > 0 and np.isnan(found.landmarks).all()
    want = load_detector(str(folder), DetectorConfig(thresholds=(0.0, 0.0, 0.0))).detect(
        np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    assert len(want) == len(found)


def test_original_weights_keep_their_regression_mode(exported, tmp_path):
    manifest = json.loads((exported / "mtcnn.json").read_text())
    manifest["cascade"]["pnet_regression"] = "original"  # what an export of original:PATH records
    folder = tmp_path / "orig"
    folder.mkdir()
    for name in NET_NAMES:
        (folder / f"{name}.onnx").write_bytes((exported / f"{name}.onnx").read_bytes())
    (folder / "mtcnn.json").write_text(json.dumps(manifest))
    assert load_detector(str(folder), backend="onnx").cfg.pnet_regression == "original"
    explicit = DetectorConfig(pnet_regression="inclusive")
    assert load_detector(str(folder), explicit, backend="onnx").cfg.pnet_regression == "inclusive"


# -- errors ----------------------------------------------------------------------------------------


def test_backend_errors(exported, tmp_path):
    with pytest.raises(ValueError, match="unknown backend 'tensorflow'"):
        load_detector("shipped", backend="tensorflow")
    with pytest.raises(ValueError, match="folder written by make export"):
        load_detector("shipped", backend="onnx")
    with pytest.raises(FileNotFoundError, match="no mtcnn.json and no .onnx files"):
        load_detector(str(tmp_path), backend="onnx")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_detector(str(tmp_path / "missing"), backend="onnx")
    with pytest.raises(ValueError, match="runs on the CPU"):
        load_detector(str(exported), DetectorConfig(device="cuda"), backend="onnx")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for path in exported.iterdir():
        (damaged / path.name).write_bytes(path.read_bytes())
    (damaged / "onet.onnx").unlink()
    with pytest.raises(FileNotFoundError, match="lacks onet.onnx"):
        load_detector(str(damaged), backend="onnx")
    (damaged / "onet.onnx").write_bytes((exported / "rnet.onnx").read_bytes())
    with pytest.raises(ValueError, match="sha256"):
        load_detector(str(damaged), backend="onnx")


def test_cli_errors_are_one_line_exit_2(exported, tmp_path, capsys):
    import cv2

    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((30, 30, 3), np.uint8))
    (tmp_path / "empty").mkdir()  # a weights folder beside the output, not around it
    for backend, weights, message in (("tensorflow", "shipped", "unknown backend"),
                                      ("onnx", str(tmp_path / "empty"), "no .onnx files")):
        cfg = DetectConfig(image=str(image), weights=weights, out=str(tmp_path / "o"), backend=backend)
        assert detect_main(cfg) == 2
        err = capsys.readouterr().err
        assert message in err and err.strip().count("\n") == 0
    assert export_main(ExportConfig(out=str(tmp_path / "e"), weights=str(tmp_path / "nothing"))) == 2
    assert "expected 'shipped'" in capsys.readouterr().err
    cfg = DetectConfig(image=str(image), weights=str(exported), out=str(tmp_path / "o"), backend="onnx", threads=1)
    assert detect_main(cfg) == 0


def test_export_cli_as_a_process(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "detector.export", "--out", str(tmp_path / "o"), "--weights",
                           str(tmp_path / "none")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
