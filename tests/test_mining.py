"""Hard-example mining: detections labelled by IoU, and rnet-data / onet-data end to end."""

from dataclasses import replace

import numpy as np
import pytest
import torch

import prepare.generate as generate
from core.geometry import iou, square
from core.imageio import read_image_rgb
from core.nets import build_net
from lmdb_builders.reader import ShardDataset, records_to_batch
from prepare.fingerprint import build_fingerprint
from prepare.generate import MINING_DETECTOR, main, tiny_config
from prepare.mining import mined_crops, mining_detector, mining_stages
from prepare.sampling import SamplingConfig, label_detections, with_jittered_faces

FACES = np.array([[100, 100, 149, 149], [300, 100, 339, 139]], dtype=float)


def test_detections_are_labelled_by_their_best_face():
    boxes = np.array([
        [100, 100, 149, 149],  # the first face exactly: positive
        [104, 104, 153, 153],  # IoU 2116 / 2884 = 0.734 with face 0: positive
        [115, 115, 164, 164],  # IoU 1225 / 3775 = 0.325: ambiguous, left out
        [110, 100, 159, 149],  # IoU 2000 / 3000 = 0.667: positive
        [300, 112, 339, 151],  # IoU 1120 / 2080 = 0.538 with face 1: part
        [0, 0, 49, 49],        # no face: negative
        [200, 300, 259, 359],  # no face: negative
    ])
    np.testing.assert_allclose(iou(FACES[0], boxes[1:4]), [2116 / 2884, 1225 / 3775, 2000 / 3000])
    crops = label_detections(np.random.default_rng(0), boxes, FACES, FACES, 10, SamplingConfig())
    assert crops.positives.tolist() == boxes[[0, 1, 3]].tolist()
    assert crops.positive_faces.tolist() == [FACES[0].tolist()] * 3
    assert crops.parts.tolist() == [boxes[4].tolist()] and crops.part_faces.tolist() == [FACES[1].tolist()]
    assert crops.negatives.tolist() == boxes[[5, 6]].tolist()


def test_negative_cap_and_dropped_faces():
    background = np.array([[x, 400, x + 29, 429] for x in range(0, 600, 30)])
    hidden = np.array([[0, 400, 59, 429]], dtype=float)  # an invalid face, not trained on
    crops = label_detections(np.random.default_rng(1), background, np.zeros((0, 4)), hidden, 5, SamplingConfig())
    assert len(crops.negatives) == 5
    assert not any((crops.negatives[:, 0] == x).any() for x in (0, 30))  # inside the hidden face
    assert len(crops.positives) == 0 and len(crops.parts) == 0


def test_jittered_faces_are_added_to_the_mined_ones_and_negatives_stay():
    boxes = np.array([[100, 100, 149, 149], [0, 0, 49, 49]])
    mined = label_detections(np.random.default_rng(0), boxes, FACES, FACES, 10, SamplingConfig())
    tiny = np.array([[10, 300, 17, 307]], dtype=float)  # 8 px: below min_face, gives nothing
    both = with_jittered_faces(np.random.default_rng(0), 640, 480, mined, np.r_[FACES, tiny], SamplingConfig())
    assert both.negatives.tolist() == mined.negatives.tolist()
    assert both.positives[:1].tolist() == mined.positives.tolist()  # the detections come first
    assert len(both.positives) > 1 and len(both.parts) > 0
    assert both.positives.dtype == np.int64 and len(both.positive_faces) == len(both.positives)
    for crops, faces, lo, hi in ((both.positives, both.positive_faces, 0.65, 1.0),
                                 (both.parts, both.part_faces, 0.4, 0.65)):
        overlaps = np.array([iou(f, c[None])[0] for c, f in zip(crops, faces)])
        assert (overlaps >= lo).all() and (overlaps <= hi).all()
        assert not (faces == tiny).all(axis=1).any()


@pytest.fixture(scope="module")
def mining_weights(tmp_path_factory):
    """Random P-Net / R-Net with the face bias raised, so that they propose plenty of boxes."""
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    for name, head in (("pnet", "conv4_1"), ("rnet", "dense5_1")):
        net = build_net(name)
        with torch.no_grad():
            getattr(net, head).bias.copy_(torch.tensor([-3.0, 3.0]))
        torch.save(net.state_dict(), folder / f"{name}.pt")
    return folder


@pytest.mark.parametrize("size", [24, 48])
def test_mined_build_end_to_end(tiny_wider, mining_weights, tmp_path, size):
    cfg = tiny_config(tiny_wider.train_txt, tiny_wider.train_images, tiny_wider.landmarks_txt, tmp_path / "mined",
                      net_sizes=(size,), workers=1, mine_with=str(mining_weights),
                      mine=replace(MINING_DETECTOR, thresholds=(0.5, 0.5, 0.5), min_face=16))
    manifest = main(cfg)
    counts = manifest["buckets"][str(size)]["counts"]
    assert counts["neg"] > 0 and counts["pos"] + counts["part"] > 0 and counts["landmark"] > 0, counts
    assert manifest["mined_with"] == (["pnet"] if size == 24 else ["pnet", "rnet"])
    assert counts["neg"] <= 5 * cfg.mine_negatives_per_image
    batch = records_to_batch(ShardDataset(tmp_path / "mined", size).__getitems__(list(range(counts["neg"] + 4))))
    assert batch["image"].shape[1:] == (size, size, 3)
    if size == 24:  # with the jittered faces of every face added, the same build has more faces
        more = main(replace(cfg, out=str(tmp_path / "more"), mine_jittered_faces=True))
        more_counts = more["buckets"]["24"]["counts"]
        assert more_counts["pos"] > counts["pos"] and more_counts["neg"] == counts["neg"]
        assert more["fingerprint"] != manifest["fingerprint"]


def test_mined_records_carry_finite_box_targets(tiny_wider, mining_weights):
    cfg = tiny_config(tiny_wider.train_txt, tiny_wider.train_images, None, "unused", net_sizes=(24,),
                      mine_with=str(mining_weights),
                      mine=replace(MINING_DETECTOR, thresholds=(0.5, 0.5, 0.5), min_face=16))
    items, _ = generate.build_items(cfg)
    image = read_image_rgb(items[1].path)
    detector = mining_detector(cfg.mine_with, 24, cfg.mine)
    dets = detector.detect_stages(image, mining_stages(24))["pnet"]
    assert len(dets) > 0
    item = items[1]
    crops = mined_crops(np.random.default_rng(0), image, detector, 24, item.faces, item.all_faces, 10**6, cfg.sampling)
    fed = {tuple(box) for box in np.floor(square(dets.boxes)).astype(np.int64).tolist()}  # what R-Net is fed
    mined = np.concatenate([crops.negatives, crops.positives, crops.parts]).tolist()
    assert mined and all(tuple(box) in fed for box in mined)
    records = generate.item_records(items[1], np.random.default_rng(0), cfg)
    labelled = [r for r in records if r["kind"][0] in (1, 2)]
    assert labelled
    for recs in labelled:  # a positive or part crop overlaps its face by >= 0.4: offsets stay small
        assert np.isfinite(recs["box"]).all() and (np.abs(recs["box"]) < 1).all()


def test_retrained_pnet_changes_the_fingerprint(tiny_wider, mining_weights, tmp_path):
    cfg = tiny_config(tiny_wider.train_txt, tiny_wider.train_images, None, tmp_path, net_sizes=(24,),
                      mine_with=str(mining_weights))
    before = build_fingerprint(cfg)[0]
    copy = tmp_path / "w"
    copy.mkdir()
    net = build_net("pnet")
    torch.save(net.state_dict(), copy / "pnet.pt")
    after = build_fingerprint(tiny_config(tiny_wider.train_txt, tiny_wider.train_images, None, tmp_path,
                                                   net_sizes=(24,), mine_with=str(copy)))[0]
    assert before != after


def test_the_mining_cascade_decides_the_fingerprint_but_not_where_or_how_fast_it_runs(tiny_wider, mining_weights,
                                                                                       tmp_path):
    cfg = tiny_config(tiny_wider.train_txt, tiny_wider.train_images, None, tmp_path, net_sizes=(24,),
                      mine_with=str(mining_weights))
    key, described = build_fingerprint(cfg)
    # the nested DetectorConfig enters flat, named as its options are (--mine-thresholds, ...)
    assert described["mine_thresholds"] == cfg.mine.thresholds and "mine" not in described
    assert "mine_device" not in described and "mine_batch_size" not in described
    assert build_fingerprint(replace(cfg, mine=replace(cfg.mine, device="cuda", batch_size=16)))[0] == key
    assert build_fingerprint(replace(cfg, mine=replace(cfg.mine, thresholds=(0.6, 0.3, 0.7))))[0] != key
    unmined = tiny_config(tiny_wider.train_txt, tiny_wider.train_images, None, tmp_path, net_sizes=(24,))
    assert not [k for k in build_fingerprint(unmined)[1] if k.startswith("mine")]


def test_mining_stages():
    assert mining_stages(24) == ("pnet",) and mining_stages(48) == ("pnet", "rnet")
    with pytest.raises(ValueError, match="24 or 48"):
        mining_stages(12)


def test_mining_needs_the_earlier_nets(tiny_wider, tmp_path):
    only_pnet = tmp_path / "w"
    only_pnet.mkdir()
    torch.save(build_net("pnet").state_dict(), only_pnet / "pnet.pt")
    cfg = tiny_config(tiny_wider.train_txt, tiny_wider.train_images, None, tmp_path / "o", net_sizes=(48,),
                      mine_with=str(only_pnet))
    with pytest.raises(FileNotFoundError, match="rnet.pt"):
        main(cfg)
    with pytest.raises(ValueError, match="mining writes one size"):
        tiny_config(tiny_wider.train_txt, tiny_wider.train_images, None, tmp_path / "p", net_sizes=(12,),
                    mine_with=str(only_pnet))
