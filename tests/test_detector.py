"""The cascade detector, its loading and the detect CLI (CPU, no network).

The parity test needs facenet-pytorch's original weights in ``$MTCNN_ORIGINAL_WEIGHTS`` or
``weights/original/`` (``make original-weights``) and is skipped without them.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import detector.cascade as cascade
from detector.cascade import (
    Detections,
    Detector,
    DetectorConfig,
    _area_resample,
    _area_resize,
    _integral_image,
    load_detector,
    pyramid_scales,
)
import core.weights
from core.geometry import NMS_CHUNK as _NMS_CHUNK, nms_fast as _nms_fast
from core.weights import resolve_weights
from detector.detect import DetectConfig, main as detect_main
from core.geometry import crop_with_padding, iou, nms
from core.nets import NET_NAMES, build_net
from child_env import REPO, child_env


# facenet-pytorch 2.6.0's MTCNN on skimage.data.astronaut(), min face 20, 0.6/0.7/0.7, factor 0.709.
# Its coordinates are the original Matlab code's 1-based ones: exactly ours + 1.
REF_BOX = np.array([181.05, 62.16, 267.75, 172.05])
REF_LANDMARKS = np.array([[205.0, 101.7], [246.8, 103.7], [224.7, 129.0], [201.7, 139.2], [245.3, 141.9]])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def original_weights() -> Path:
    folder = Path(os.environ.get("MTCNN_ORIGINAL_WEIGHTS", REPO / "weights" / "original"))
    if not all((folder / f"{n}.pt").is_file() for n in NET_NAMES):
        pytest.skip(f"original MTCNN weights not in {folder} (make original-weights, or set MTCNN_ORIGINAL_WEIGHTS)")
    return folder


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage.data import astronaut as load

    return load()


def random_nets(seed: int = 0, names=NET_NAMES) -> dict:
    torch.manual_seed(seed)
    return {name: build_net(name) for name in names}


def synthetic_image(h: int = 60, w: int = 80, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    image[(yy - h / 2) ** 2 / 400 + (xx - w / 2) ** 2 / 250 < 1] = (200, 160, 140)  # a face-ish blob
    return image


LOOSE = DetectorConfig(thresholds=(0.0, 0.0, 0.0))  # random nets: let every box through every stage


def check_detections(d: Detections, landmarks: bool) -> None:
    n = len(d)
    assert d.boxes.shape == (n, 4) and d.scores.shape == (n,) and d.landmarks.shape == (n, 5, 2)
    assert np.isfinite(d.boxes).all() and ((d.scores >= 0) & (d.scores <= 1)).all()
    assert (np.diff(d.scores) <= 0).all()  # best first
    assert np.isfinite(d.landmarks).all() if landmarks else np.isnan(d.landmarks).all()


# -- parity with facenet-pytorch ---------------------------------------------------------------


def test_parity_with_facenet_pytorch_on_astronaut(original_weights, astronaut):
    detector = load_detector(f"original:{original_weights}", DetectorConfig(min_face=20))
    found = detector.detect(astronaut)
    assert len(found) == 1
    np.testing.assert_allclose(found.boxes[0] + 1, REF_BOX, atol=1.0)
    np.testing.assert_allclose(found.landmarks[0] + 1, REF_LANDMARKS, atol=1.0)
    assert found.scores[0] > 0.999
    # In fact it is exact to the reference's printed precision.
    np.testing.assert_allclose(found.boxes[0] + 1, REF_BOX, atol=0.01)
    np.testing.assert_allclose(found.landmarks[0] + 1, REF_LANDMARKS, atol=0.06)


def test_detect_stages_on_astronaut(original_weights, astronaut):
    detector = load_detector(f"original:{original_weights}")
    stages = detector.detect_stages(astronaut)
    assert list(stages) == list(NET_NAMES)
    assert len(stages["pnet"]) > len(stages["rnet"]) >= len(stages["onet"]) == 1
    check_detections(stages["pnet"], landmarks=False)  # the original P-Net / R-Net have no landmark head
    check_detections(stages["rnet"], landmarks=False)
    check_detections(stages["onet"], landmarks=True)
    pnet_only = detector.detect_stages(astronaut, ("pnet",))
    assert list(pnet_only) == ["pnet"]
    np.testing.assert_array_equal(pnet_only["pnet"].boxes, stages["pnet"].boxes)
    # Mining for O-Net: P-Net then R-Net; each face of the final output came through R-Net.
    two = detector.detect_stages(astronaut, ("pnet", "rnet"))
    np.testing.assert_array_equal(two["rnet"].boxes, stages["rnet"].boxes)


# -- random weights, odd images ------------------------------------------------------------------


def test_random_nets_run_end_to_end():
    detector = Detector(random_nets(), LOOSE)
    stages = detector.detect_stages(synthetic_image())
    for name in NET_NAMES:
        assert len(stages[name]) > 0
        check_detections(stages[name], landmarks=True)  # fresh nets carry every landmark head
    np.testing.assert_array_equal(detector.detect(synthetic_image()).boxes, stages["onet"].boxes)


def test_grey_rgba_and_single_channel_match_rgb():
    detector = Detector(random_nets(), LOOSE)
    rgb = synthetic_image()
    grey = rgb[:, :, 1]
    as_rgb = detector.detect(np.repeat(grey[:, :, None], 3, axis=2))
    for variant in (grey, grey[:, :, None]):
        np.testing.assert_array_equal(detector.detect(variant).boxes, as_rgb.boxes)
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(detector.detect(rgba).boxes, detector.detect(rgb).boxes)


@pytest.mark.parametrize("shape", [(5, 5), (5, 5, 3), (11, 40, 3), (1, 1, 4), (0, 0, 3), (15, 15, 3)])
def test_small_images_give_no_faces(shape):
    # 15 px with min face 20: the first pyramid scale (0.6) already makes it < 12 px.
    found = Detector(random_nets(), LOOSE).detect(np.zeros(shape, np.uint8))
    assert len(found) == 0 and found.boxes.shape == (0, 4) and found.landmarks.shape == (0, 5, 2)


def test_bad_image_shape_is_rejected():
    with pytest.raises(ValueError):
        Detector(random_nets(), LOOSE).detect(np.zeros((20, 20, 2), np.uint8))


def test_min_face_below_12_upsamples():
    assert pyramid_scales(100, 100, 20, 0.709)[0] == pytest.approx(0.6)
    assert pyramid_scales(100, 100, 6, 0.709)[0] == pytest.approx(2.0)
    assert pyramid_scales(19, 40, 20, 0.709) == []  # 19 * 0.6 < 12
    found = Detector(random_nets(), DetectorConfig(min_face=8, thresholds=(0.0, 0.0, 0.0))).detect(synthetic_image(20, 20))
    check_detections(found, landmarks=True)


def test_stage_arguments_are_checked():
    detector = Detector(random_nets(names=("pnet", "rnet")), LOOSE)
    assert detector.stages == ("pnet", "rnet")
    with pytest.raises(ValueError):
        detector.detect_stages(synthetic_image(), ("pnet", "rnet", "onet"))
    with pytest.raises(ValueError):
        detector.detect_stages(synthetic_image(), ("rnet",))
    with pytest.raises(ValueError):
        Detector(random_nets(names=("pnet", "onet")), LOOSE)


def test_public_api_at_package_level():
    import detector

    assert (detector.Detector, detector.DetectorConfig, detector.Detections, detector.load_detector,
            detector.pyramid_scales) == (Detector, DetectorConfig, Detections, load_detector, pyramid_scales)
    assert set(detector.__all__) == {"Detector", "DetectorConfig", "Detections", "load_detector", "pyramid_scales"}


def test_every_config_field_says_what_it_is():
    from dataclasses import fields

    from core.cli import field_docs

    docs = field_docs(DetectorConfig)
    assert [f.name for f in fields(DetectorConfig) if not docs.get(f.name)] == []


def test_detector_benchmark_takes_the_detector_defaults(tmp_path):
    from benchmarks.bench_detector import BenchConfig, main as bench_main, parse_args as bench_args

    assert BenchConfig().detector == DetectorConfig()  # the nested config, not copies of its fields
    assert bench_args(["--images", "x", "--num", "3", "--threads", "none"]) == BenchConfig(images="x", num=3)
    assert bench_args(["--min-face", "12"]).detector == DetectorConfig(min_face=12)
    with pytest.raises(SystemExit):  # DetectorConfig's own check, a usage error
        bench_args(["--min-face", "0"])
    with pytest.raises(FileNotFoundError, match="no .jpg images"):
        bench_main(BenchConfig(images=str(tmp_path)))


def test_config_is_validated():
    for bad in (dict(min_face=0), dict(scale_factor=1.0), dict(thresholds=(0.6, 0.7)), dict(batch_size=0),
                dict(onet_nms_mode="max"), dict(pnet_regression="x")):
        with pytest.raises(ValueError):
            DetectorConfig(**bad)


def test_batch_size_does_not_change_results():
    image = synthetic_image()
    big = Detector(random_nets(), LOOSE).detect(image)
    small = Detector(random_nets(), DetectorConfig(thresholds=(0.0, 0.0, 0.0), batch_size=7)).detect(image)
    np.testing.assert_allclose(small.boxes, big.boxes, atol=1e-4)


# -- the building blocks -------------------------------------------------------------------------


def test_area_resample_equals_interpolate_area_with_zero_padding():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    integral = _integral_image(image, torch.device("cpu"))
    boxes = np.array([[0, 0, 52, 36], [5, 7, 30, 20], [-6, -3, 10, 12], [40, 25, 70, 50], [3, 3, 8, 8], [10, 10, 10, 10]])
    for size in (24, 48):
        got = _area_resample(integral, torch.as_tensor(boxes), size, size)
        for box, crop in zip(boxes, got):
            patch = torch.from_numpy(crop_with_padding(image, box)).permute(2, 0, 1)[None].float()
            want = F.interpolate(patch, size=(size, size), mode="area")[0].permute(1, 2, 0)
            torch.testing.assert_close(crop, want, atol=1e-4, rtol=0)
    level = _area_resize(integral, 23, 31)[0]
    want = F.interpolate(torch.from_numpy(image).permute(2, 0, 1)[None].float(), size=(23, 31), mode="area")[0]
    torch.testing.assert_close(level, want.permute(1, 2, 0), atol=1e-4, rtol=0)


def test_fast_nms_equals_boxes_nms():
    rng = np.random.default_rng(2)
    for trial in range(6):
        n = int(rng.integers(100, 600))
        xy = rng.uniform(0, 500, (n, 2))
        boxes = np.c_[xy, xy + rng.uniform(3, [15, 60, 200][trial % 3], (n, 2))]
        if trial % 2:
            boxes = np.floor(boxes)
        scores = np.round(rng.random(n), 2)  # many ties
        for threshold in (0.0, 0.3, 0.7):
            np.testing.assert_array_equal(_nms_fast(boxes, scores, threshold), nms(boxes, scores, threshold))
    np.testing.assert_array_equal(_nms_fast(boxes[:50], scores[:50], 0.5, "min"), nms(boxes[:50], scores[:50], 0.5, "min"))


def test_fast_nms_sees_boxes_starting_within_a_pixel_of_another_end():
    # Inclusive widths: [0, 9] and [9.5, 19] share half a pixel. Box 0 ends its block of boxes
    # (the fillers, far below, end before it), the last box starts the next block.
    n = _NMS_CHUNK - 1
    fillers = [[0, 100 + 20 * k, 5, 105 + 20 * k] for k in range(n)]
    boxes = np.array([[0, 0, 9, 9]] + fillers + [[9.5, 0, 19, 9]], dtype=float)
    scores = np.r_[0.9, np.full(n, 0.5), 0.8]
    want = nms(boxes, scores, 0.0)
    assert n + 1 not in want
    np.testing.assert_array_equal(_nms_fast(boxes, scores, 0.0), want)


# -- loading -------------------------------------------------------------------------------------


def save_nets(folder: Path, names, seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, net in random_nets(seed, names).items():
        torch.save(net.state_dict(), folder / f"{name}.pt")


def test_checkpoint_folder_with_only_pnet_gives_pnet_detections(tmp_path):
    save_nets(tmp_path, ("pnet",))
    detector = load_detector(str(tmp_path), LOOSE)
    assert detector.stages == ("pnet",)
    image = synthetic_image()
    found = detector.detect(image)
    assert len(found) > 0
    check_detections(found, landmarks=True)  # our P-Net has its landmark head
    np.testing.assert_array_equal(found.boxes, detector.detect_stages(image, ("pnet",))["pnet"].boxes)


def test_checkpoint_folder_errors(tmp_path):
    save_nets(tmp_path / "gap", ("pnet", "onet"))
    with pytest.raises(FileNotFoundError, match="rnet.pt"):
        load_detector(str(tmp_path / "gap"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="pnet.pt"):
        load_detector(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError):
        load_detector(str(tmp_path / "nowhere"))
    save_nets(tmp_path / "partial", ("pnet", "rnet"))
    with pytest.raises(FileNotFoundError, match="onet.pt"):
        load_detector(f"original:{tmp_path / 'partial'}")


def test_shipped_weights_find_the_astronaut_face(astronaut):
    # The committed weights/ (trained from scratch on the larger real-face set, weights/MODEL_CARD.md):
    # one face where the original finds it, landmarks close to the original's.
    found = load_detector("shipped").detect(astronaut)
    assert len(found) == 1 and found.scores[0] > 0.99
    assert iou(REF_BOX - 1, found.boxes[:1])[0] > 0.75  # 0.896 when committed
    eye_distance = np.linalg.norm(REF_LANDMARKS[0] - REF_LANDMARKS[1])
    errors = np.linalg.norm(found.landmarks[0] + 1 - REF_LANDMARKS, axis=1)
    assert errors.mean() < 0.15 * eye_distance  # 2.4 px of 41.8 when committed


def test_shipped_weights_missing_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(core.weights, "SHIPPED_WEIGHTS_DIR", tmp_path / "weights")
    with pytest.raises(FileNotFoundError, match="original:PATH"):
        resolve_weights("shipped")


def test_original_weights_get_the_original_pnet_regression(tmp_path):
    save_nets(tmp_path, NET_NAMES)
    assert load_detector(f"original:{tmp_path}").cfg.pnet_regression == "original"
    assert load_detector(str(tmp_path)).cfg.pnet_regression == "inclusive"
    assert load_detector(str(tmp_path), DetectorConfig(pnet_regression="original")).cfg.pnet_regression == "original"


# -- the CLI -------------------------------------------------------------------------------------


def test_detect_cli_writes_json_and_annotated_image(tmp_path):
    import cv2

    save_nets(tmp_path / "w", NET_NAMES)
    image_path = tmp_path / "photo.png"
    cv2.imwrite(str(image_path), synthetic_image()[:, :, ::-1])
    cfg = DetectConfig(image=str(image_path), weights=str(tmp_path / "w"), out=str(tmp_path / "out"), detector=LOOSE)
    assert detect_main(cfg) == 0
    doc = json.loads((tmp_path / "out" / "photo.json").read_text())
    assert list(doc) == ["faces"] and len(doc["faces"]) > 0
    for face in doc["faces"]:
        assert set(face) == {"box", "score", "landmarks"}
        assert len(face["box"]) == 4 and 0 <= face["score"] <= 1
        assert np.asarray(face["landmarks"]).shape == (5, 2)
    annotated = cv2.imread(str(tmp_path / "out" / "photo.jpg"))
    assert annotated.shape == (60, 80, 3)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["photo.jpg", "photo.json"]  # no temporaries


def test_detect_cli_missing_or_unreadable_image_exits_2(tmp_path, capsys):
    save_nets(tmp_path / "w", ("pnet",))
    missing = DetectConfig(image=str(tmp_path / "nope.jpg"), weights=str(tmp_path / "w"), out=str(tmp_path / "o"))
    assert detect_main(missing) == 2
    assert "cannot read image" in capsys.readouterr().err
    (tmp_path / "junk.jpg").write_bytes(b"not a jpeg")
    junk = DetectConfig(image=str(tmp_path / "junk.jpg"), weights=str(tmp_path / "w"), out=str(tmp_path / "o"))
    assert detect_main(junk) == 2
    assert "not a readable image" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_detect_cli_as_a_process_prints_one_line_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "detector.detect", "--image", str(tmp_path / "missing.jpg"), "--weights", "shipped",
         "--out", str(tmp_path / "o")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env=child_env(),
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.strip().count("\n") == 0
    assert "missing.jpg" in proc.stderr
