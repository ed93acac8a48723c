"""The gallery (``make enroll``) and identification (``make identify``) on the demo identities.

Six of ``demo.identities``' people, four photos each, are enrolled with the shipped detector and
embedder; their fifth photos are identified. Search is checked exactly against a brute-force loop
on hand-made vectors, and each bad input of issue #32 is injected: an empty gallery, an identity
without a face, an image without a face, a corrupt image, a gallery of another embedder, a
threshold out of range, two enrolls at once, and a write that fails half-way.
"""

from __future__ import annotations

import csv
import json
import resource
import shutil
import signal
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from core.lock import folder_lock
from core.weights import SHIPPED_WEIGHTS_DIR, load_weights, pack_weights
from demo.identities import DemoIdentitiesConfig, build
from recognition import enroll as enroll_module
from recognition.enroll import EnrollConfig
from recognition.enroll import cli as enroll_cli
from recognition.enroll import main as enroll_main
from recognition.gallery import GALLERY_FILE, Gallery, load_gallery, save_gallery
from recognition.identify import IdentifyConfig, name_faces
from recognition.identify import cli as identify_cli
from recognition.identify import main as identify_main
from recognition.threshold import resolve_threshold

# People the shipped embedder tells apart on the demo's blurry 25 px faces (the others it confuses:
# the set shows the stages working, not the embedder's accuracy).
PEOPLE = ("Demo_Person_01", "Demo_Person_02", "Demo_Person_03", "Demo_Person_04", "Demo_Person_07", "Demo_Person_09")
FAST = ["--threads", "1", "--no-progress"]  # one thread: on a shared 2-core machine torch's two thrash


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> tuple[Path, Path]:
    """``(root, held)``: root/<person>/ holds photos 1-4 of each person, held/ their 5th photos."""
    people = build(DemoIdentitiesConfig(out=str(tmp_path_factory.mktemp("people"))))
    base = tmp_path_factory.mktemp("gallery-photos")
    root, held = base / "root", base / "held"
    held.mkdir()
    for person in PEOPLE:
        shots = sorted((people / "images" / person).iterdir())
        (root / person).mkdir(parents=True)
        for shot in shots[:4]:
            shutil.copy(shot, root / person / shot.name)
        shutil.copy(shots[4], held / shots[4].name)
    return root, held


@pytest.fixture(scope="module")
def enrolled(photos, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("gallery") / "out"
    summary = enroll_main(EnrollConfig(gallery=str(photos[0]), out=str(out), threads=1, progress=False))
    return out, summary


def copy_gallery(photos, enrolled, tmp_path) -> tuple[Path, Path]:
    """A copy of the photos and of the enrolled gallery, for a test to change."""
    root, out = tmp_path / "root", tmp_path / "out"
    shutil.copytree(photos[0], root)
    out.mkdir()
    shutil.copy(enrolled[0] / GALLERY_FILE, out / GALLERY_FILE)
    return root, out


def blank_jpg(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((120, 120, 3), 128, np.uint8))
    return path


# -- enroll and identify -------------------------------------------------------------------------


def test_enroll_then_identify_names_the_held_out_photos(photos, enrolled, tmp_path):
    out, summary = enrolled
    gallery = load_gallery(out)
    # two photos have no face the shipped detector finds (Demo_Person_03_0003, Demo_Person_04_0002): counted
    assert summary["images"] == 24 and summary["skipped"] == {"no face found": 2} and len(gallery) == 22
    assert list(gallery.people) == list(PEOPLE) and gallery.dim == 128
    assert np.allclose(np.linalg.norm(gallery.vectors, axis=1), 1, atol=1e-5)
    assert sorted(gallery.meta["no_face"]) == ["Demo_Person_03/Demo_Person_03_0003.jpg",
                                               "Demo_Person_04/Demo_Person_04_0002.jpg"]
    assert gallery.meta["embedder"]["path"].endswith("embedder.pt") and set(gallery.meta["detector"]["weights_sha256"]) \
        == {"pnet.pt", "rnet.pt", "onet.pt"}
    result = identify_main(IdentifyConfig(images=(str(photos[1]),), gallery=str(out), out=str(tmp_path / "id"),
                                          threads=1, progress=False))
    assert result["faces"] == 6 and result["unknown"] == 0
    assert result["threshold"] == load_weights(SHIPPED_WEIGHTS_DIR / "embedder.pt").record["calibration"]["threshold"]
    rows = list(csv.DictReader((tmp_path / "id" / "identify.csv").open()))
    assert [(Path(r["image"]).name[:14], r["identity"]) for r in rows] == [(p, p) for p in PEOPLE]
    assert all(r["runner_up"] not in ("", r["identity"]) and float(r["distance"]) < float(r["runner_up_distance"])
               for r in rows)
    doc = json.loads((tmp_path / "id" / "Demo_Person_01_0005.json").read_text())
    assert doc["faces"][0]["identity"] == "Demo_Person_01" and doc["faces"][0]["best_source"].startswith("Demo_Person_01/")
    assert cv2.imread(str(tmp_path / "id" / "Demo_Person_01_0005.jpg")).shape == (120, 120, 3)


def test_every_face_of_a_photo_is_named(photos, enrolled, tmp_path):
    """A photo holding three people side by side: three faces, each named (not only the largest)."""
    shots = [cv2.imread(str(p)) for p in sorted(photos[1].iterdir())[:3]]
    group = blank_jpg(tmp_path / "group.jpg")
    cv2.imwrite(str(group), np.concatenate(shots, axis=1))
    identify_main(IdentifyConfig(images=(str(group),), gallery=str(enrolled[0]), out=str(tmp_path / "id"), threads=1,
                                 progress=False))
    faces = json.loads((tmp_path / "id" / "group.json").read_text())["faces"]
    assert sorted((f["box"][0] // 120, f["identity"]) for f in faces) == [(0, PEOPLE[0]), (1, PEOPLE[1]), (2, PEOPLE[2])]


def test_identify_resumes_reusing_whole_answers_of_the_same_settings_only(photos, enrolled, tmp_path, monkeypatch,
                                                                          capsys):
    from detector.cascade import Detector

    held = tmp_path / "held"
    shutil.copytree(photos[1], held)
    cfg = IdentifyConfig(images=(str(held),), gallery=str(enrolled[0]), out=str(tmp_path / "id"), threads=1,
                         progress=False)
    first = identify_main(cfg)
    csv_first = (tmp_path / "id" / "identify.csv").read_bytes()
    assert first["reused"] == 0 and first["read"] == 6
    detected: list[int] = []
    real = Detector.detect_batch
    monkeypatch.setattr(Detector, "detect_batch", lambda self, images: detected.append(len(images)) or real(self, images))
    again = identify_main(cfg)  # everything answered before: no image detected, the same CSV
    assert again["reused"] == 6 and detected in ([], [0]) and (tmp_path / "id" / "identify.csv").read_bytes() == csv_first
    assert {k: v for k, v in again.items() if k != "reused"} == {k: v for k, v in first.items() if k != "reused"}
    assert "6 faces in 6 of 6 images (0 unknown, 0 images without a face, 0 unreadable, 6 answered by an earlier run)" \
        in capsys.readouterr().out
    one = replace(cfg, images=(str(held / "Demo_Person_01_0005.jpg"),), out=str(tmp_path / "one"))
    identify_main(one)
    assert type(identify_main(one)["without_face"]) is int  # counted, not a flag, when the first image is reused
    assert "(0 unknown, 0 images without a face, 0 unreadable, 1 answered by an earlier run)" in capsys.readouterr().out
    # a photo whose bytes changed; one whose annotated JPEG is missing; one whose JPEG is another run's
    # (a run killed between its two writes): those three are redone, the other three reused
    shutil.copy(held / "Demo_Person_02_0005.jpg", held / "Demo_Person_01_0005.jpg")
    (tmp_path / "id" / "Demo_Person_03_0005.jpg").unlink()
    shutil.copy(tmp_path / "id" / "Demo_Person_09_0005.jpg", tmp_path / "id" / "Demo_Person_07_0005.jpg")
    detected.clear()
    third = identify_main(cfg)
    assert third["reused"] == 3 and sum(detected) == 3
    redone = json.loads((tmp_path / "id" / "Demo_Person_01_0005.json").read_text())
    assert redone["faces"][0]["identity"] == "Demo_Person_02"
    images = [row["image"] for row in csv.DictReader((tmp_path / "id" / "identify.csv").open())]
    assert images == sorted(str(p) for p in held.iterdir())  # the images' order, reused or redone
    # another threshold answers differently: nothing reused
    detected.clear()
    assert identify_main(replace(cfg, threshold=0.5))["reused"] == 0 and sum(detected) == 6


def test_enrolling_again_embeds_only_the_new_photo_and_drops_a_removed_one(photos, enrolled, tmp_path, monkeypatch):
    root, out = copy_gallery(photos, enrolled, tmp_path)
    before = load_gallery(out)
    shutil.copy(photos[1] / "Demo_Person_01_0005.jpg", root / "Demo_Person_01")
    (root / "Demo_Person_02" / "Demo_Person_02_0001.jpg").unlink()
    read = []
    real_read = enroll_module.read_image_rgb
    monkeypatch.setattr(enroll_module, "read_image_rgb", lambda p: read.append(Path(p).name) or real_read(p))
    summary = enroll_main(EnrollConfig(gallery=str(root), out=str(out), threads=1, progress=False))
    assert read == ["Demo_Person_01_0005.jpg"]  # neither the 21 kept photos nor the two without a face
    assert (summary["embedded"], summary["kept"], summary["dropped"]) == (1, 21, 1)
    after = load_gallery(out)
    assert "Demo_Person_01/Demo_Person_01_0005.jpg" in after.sources
    assert "Demo_Person_02/Demo_Person_02_0001.jpg" not in after.sources and len(after) == 22
    same = {s: v for s, v in zip(before.sources, before.vectors)}
    assert all(np.array_equal(same[s], v) for s, v in zip(after.sources, after.vectors) if s in same)
    assert after.meta["no_face"] == before.meta["no_face"]


def test_a_killed_enroll_keeps_what_it_saved_and_the_next_embeds_only_the_rest(photos, tmp_path, monkeypatch):
    """The periodic save (every FLUSH_SECONDS, here after each batch of 4): a run killed in its third
    batch leaves the first two batches' faces in a whole gallery, and enrolling again reads only the rest."""
    root, out = tmp_path / "root", tmp_path / "gallery"
    shutil.copytree(photos[0], root)
    monkeypatch.setattr(enroll_module, "FLUSH_SECONDS", -1.0)
    read: list[str] = []
    real_read = enroll_module.read_image_rgb

    def killed_at_the_eleventh(path):
        if len(read) == 10:
            raise KeyboardInterrupt
        read.append(Path(path).name)
        return real_read(path)

    monkeypatch.setattr(enroll_module, "read_image_rgb", killed_at_the_eleventh)
    cfg = EnrollConfig(gallery=str(root), out=str(out), threads=1, progress=False, batch_images=4)
    with pytest.raises(KeyboardInterrupt):
        enroll_main(cfg)
    saved = load_gallery(out)
    assert list(saved.sources) == [f"Demo_Person_0{p}/Demo_Person_0{p}_000{i}.jpg" for p in (1, 2) for i in (1, 2, 3, 4)]
    monkeypatch.setattr(enroll_module, "read_image_rgb", lambda p: read.append(Path(p).name) or real_read(p))
    read.clear()
    summary = enroll_main(cfg)
    assert len(read) == 16 and (summary["kept"], summary["embedded"]) == (8, 14) and len(load_gallery(out)) == 22


# -- search ----------------------------------------------------------------------------------------

# Unit vectors whose products and distances are exact in float32.
HAND = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0.5, 0.5, 0.5, 0.5], [0.5, -0.5, 0.5, -0.5], [-1, 0, 0, 0]], np.float32)
HAND_PEOPLE = ["ann", "bob", "ann", "cid", "bob"]


def brute_force(gallery_vectors, queries, k):
    out = []
    for q in queries:
        d = [float(((q.astype(np.float64) - g) ** 2).sum()) for g in gallery_vectors]
        order = sorted(range(len(d)), key=lambda i: (d[i], i))[:k]
        out.append((order, [d[i] for i in order]))
    return out


@pytest.mark.parametrize("chunk", [1 << 16, 2])  # the gallery in one chunk, or in chunks of 2 rows merged
def test_search_is_exact_against_a_brute_force_loop(monkeypatch, chunk):
    monkeypatch.setattr("recognition.gallery.CHUNK_ROWS", chunk)
    gallery = Gallery(HAND, HAND_PEOPLE)
    queries = np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], np.float32)
    found = gallery.search(queries, k=3)
    # By hand: from e1, e1 is 0 away, (.5 .5 .5 .5) and (.5 -.5 .5 -.5) are 1, e2 is 2, -e1 is 4.
    assert found.indices[0].tolist() == [0, 2, 3] and found.distances[0].tolist() == [0.0, 1.0, 1.0]
    assert found.identities[0].tolist() == ["ann", "ann", "cid"]
    for (idx, dist), got_i, got_d in zip(brute_force(HAND, queries, 3), found.indices, found.distances):
        assert got_i.tolist() == idx and got_d.tolist() == dist
    padded = gallery.search(queries[:1], k=7)  # more than the gallery holds: padded, never wrapped
    assert padded.indices[0].tolist() == [0, 2, 3, 1, 4, -1, -1] and padded.distances[0].tolist()[-2:] == [np.inf] * 2
    people = gallery.best_identities(queries[:1], k=3)  # per person: ann 0 (row 0), cid 1 (row 3), bob 2 (row 1)
    assert people.identities[0].tolist() == ["ann", "cid", "bob"] and people.indices[0].tolist() == [0, 3, 1]
    assert people.distances[0].tolist() == [0.0, 1.0, 2.0]
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((500, 16)).astype(np.float32)
    names = [f"p{i % 37}" for i in rng.permutation(500)]  # rows not grouped by person
    queries = rng.standard_normal((45, 16)).astype(np.float32)
    whole = Gallery(vectors, names)
    monkeypatch.setattr("recognition.gallery.BLOCK_ELEMENTS", 3000)  # several blocks of queries
    monkeypatch.setattr("recognition.gallery.CHUNK_ROWS", 64 if chunk == 2 else chunk)  # and of gallery rows
    for g, r in ((whole, whole.search(queries, k=5)),):
        for (idx, dist), got_i, got_d in zip(brute_force(vectors, queries, 5), r.indices, r.distances):
            assert got_i.tolist() == idx and np.allclose(got_d, dist, rtol=1e-5, atol=1e-4)
    best = whole.best_identities(queries, k=2)
    for q, (i1, i2), (n1, n2) in zip(queries, best.indices, best.identities):
        d = ((vectors - q) ** 2).sum(1)
        per = {n: min(d[j] for j in range(500) if names[j] == n) for n in set(names)}
        ranked = sorted(per, key=per.get)
        assert [n1, n2] == ranked[:2] and names[i1] == n1 and np.isclose(d[i1], per[n1], rtol=1e-5)


def test_unknown_at_or_above_the_threshold_and_the_threshold_sources():
    gallery = Gallery(HAND, HAND_PEOPLE, sources=[f"{p}/{i}.jpg" for i, p in enumerate(HAND_PEOPLE)])
    query = np.array([[0, 0, 1, 0]], np.float32)  # 1.0 from rows 2 and 3 (ann, cid), 2.0 from the rest
    assert name_faces(gallery, query, 1.0)[0]["identity"] == "unknown"  # "same" is strictly below, as LFW's scoring
    known = name_faces(gallery, query, 1.01)[0]
    assert known == {"identity": "ann", "distance": 1.0, "best": "ann", "best_source": "ann/2.jpg", "runner_up": "cid",
                     "runner_up_distance": 1.0}
    assert resolve_threshold(None, None)[0] == 1.35 and resolve_threshold(0.9, {"threshold": 1.1}) == (0.9, "--threshold")
    assert resolve_threshold(None, {"threshold": 1.1}) == (1.1, "the embedder's training record")
    with pytest.raises(ValueError, match="record's threshold must be in"):
        resolve_threshold(None, {"threshold": 4.0})


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "4", "-1", "5.5"])
def test_a_threshold_out_of_range_is_a_usage_error(enrolled, photos, tmp_path, capsys, value):
    with pytest.raises(SystemExit) as stop:
        identify_cli(["--images", str(photos[1]), "--gallery", str(enrolled[0]), "--out", str(tmp_path / "id"),
                      "--threshold", value, *FAST])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(f"--threshold must be in (0, 4), the range of "
                                                                     f"squared distances of unit vectors, got {float(value)}")


def test_an_empty_gallery_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert enroll_cli(["--gallery", str(tmp_path / "empty"), "--out", str(tmp_path / "out"), *FAST]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"python -m recognition.enroll: error: {tmp_path / 'empty'} holds no image (.jpg .jpeg .png .bmp under "
        f"<root>/<identity>/): the gallery would be empty"]
    save_gallery(tmp_path / "zero" / GALLERY_FILE, Gallery(np.zeros((0, 128), np.float32), []))
    blank_jpg(tmp_path / "photo.jpg")
    assert identify_cli(["--images", str(tmp_path / "photo.jpg"), "--gallery", str(tmp_path / "zero"),
                         "--out", str(tmp_path / "id"), *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("holds no face: enroll some (make enroll GALLERY=<root>/<identity>/<image>)")


def test_an_identity_without_a_face_is_a_counted_skip_and_no_face_at_all_is_refused(photos, tmp_path, capsys):
    root = tmp_path / "root"
    shutil.copytree(photos[0] / PEOPLE[0], root / PEOPLE[0])
    for k in (1, 2):
        blank_jpg(root / "Nobody" / f"wall_{k}.jpg")
    (root / "Nobody" / "torn.jpg").write_bytes((root / PEOPLE[0] / f"{PEOPLE[0]}_0001.jpg").read_bytes()[:300])
    blank_jpg(root / "loose.jpg")  # not in an identity folder
    assert enroll_cli(["--gallery", str(root), "--out", str(tmp_path / "out"), *FAST]) == 0
    err = capsys.readouterr().err
    assert "skipped: identity Nobody: no face found in its 3 images (not enrolled)" in err
    assert f"unreadable: {root / 'Nobody' / 'torn.jpg'}: truncated JPEG" in err
    assert f"skipped: {root / 'loose.jpg'}: not in an identity folder" in err
    assert list(load_gallery(tmp_path / "out").people) == [PEOPLE[0]]
    walls = tmp_path / "walls"
    for k in (1, 2):
        blank_jpg(walls / "Nobody" / f"wall_{k}.jpg")
    assert enroll_cli(["--gallery", str(walls), "--out", str(tmp_path / "out2"), *FAST]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"python -m recognition.enroll: error: no face found in any of the 2 images under {walls}: the gallery would be "
        f"empty")
    assert not (tmp_path / "out2" / GALLERY_FILE).exists()


def test_a_photo_without_a_face_and_a_corrupt_one_are_counted(photos, enrolled, tmp_path, capsys):
    wall = blank_jpg(tmp_path / "in" / "wall.jpg")
    torn = tmp_path / "in" / "torn.jpg"
    torn.write_bytes((photos[1] / "Demo_Person_01_0005.jpg").read_bytes()[:400])
    shutil.copy(photos[1] / "Demo_Person_09_0005.jpg", tmp_path / "in")
    assert identify_cli(["--images", str(tmp_path / "in"), "--gallery", str(enrolled[0]), "--out", str(tmp_path / "id"),
                         *FAST]) == 0
    captured = capsys.readouterr()
    assert f"unreadable: {torn}: truncated JPEG" in captured.err
    assert "1 faces in 2 of 3 images (0 unknown, 1 images without a face, 1 unreadable)" in captured.out
    rows = list(csv.DictReader((tmp_path / "id" / "identify.csv").open()))
    assert [(Path(r["image"]).name, r["identity"]) for r in rows] == [("Demo_Person_09_0005.jpg", "Demo_Person_09"),
                                                                     ("wall.jpg", "")]
    assert json.loads((tmp_path / "id" / "wall.json").read_text())["faces"] == [] and wall.is_file()
    assert not (tmp_path / "id" / "torn.json").exists()


@pytest.fixture(scope="module")
def other_embedder(tmp_path_factory) -> Path:
    """The shipped embedder with one bias nudged: another file, another SHA-256."""
    weights = load_weights(SHIPPED_WEIGHTS_DIR / "embedder.pt")
    state = dict(weights.state)
    key = next(k for k in state if k.endswith(".bias"))
    state[key] = state[key] + 0.01
    path = tmp_path_factory.mktemp("other") / "embedder.pt"
    torch.save(pack_weights(state, weights.record), path)
    return path


def test_a_gallery_from_another_embedder_is_refused(photos, enrolled, other_embedder, tmp_path, capsys):
    gallery = enrolled[0] / GALLERY_FILE
    assert identify_cli(["--images", str(photos[1]), "--gallery", str(enrolled[0]), "--out", str(tmp_path / "id"),
                         "--embedder", str(other_embedder), *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"python -m recognition.identify: error: gallery {gallery} was enrolled "
                                               f"with the embedder {SHIPPED_WEIGHTS_DIR / 'embedder.pt'} (sha256 ")
    assert f"not {other_embedder} (sha256 " in err[0]
    assert enroll_cli(["--gallery", str(photos[0]), "--out", str(enrolled[0]), "--embedder", str(other_embedder),
                       *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pass --rebuild (make enroll REBUILD=1)" in err[0]
    assert identify_cli(["--images", str(photos[1]), "--gallery", str(enrolled[0]), "--out", str(tmp_path / "id"),
                         "--align", "margin", *FAST]) == 2
    assert "aligned otherwise (align 'similarity' there, 'margin' here" in capsys.readouterr().err


def test_a_file_that_is_not_a_gallery_is_one_line(photos, tmp_path, capsys):
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / GALLERY_FILE).write_bytes(b"PK\x03\x04 not really a zip")
    assert identify_cli(["--images", str(photos[1]), "--gallery", str(tmp_path / "g"), "--out", str(tmp_path / "id"),
                         *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{tmp_path / 'g' / GALLERY_FILE}: not a gallery file (" in err[0]


def test_a_second_enroll_into_the_same_gallery_is_refused(photos, enrolled, tmp_path, capsys):
    root, out = copy_gallery(photos, enrolled, tmp_path)
    with folder_lock(out, "python -m recognition.enroll (the first)"):
        assert enroll_cli(["--gallery", str(root), "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{out} is in use by pid " in err[0] and "(python -m recognition.enroll (the first)" in err[0]


def test_a_write_that_fails_half_way_leaves_the_old_gallery_whole(photos, enrolled, tmp_path, capsys):
    """The file-size limit stops the new gallery's bytes part-way (as a full disk would): the gallery
    on disk is still the old one, whole, and no temporary file is left."""
    root, out = copy_gallery(photos, enrolled, tmp_path)
    old = (out / GALLERY_FILE).read_bytes()
    shutil.copy(photos[1] / "Demo_Person_01_0005.jpg", root / "Demo_Person_01")
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG, not a kill
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (len(old) + 64, limits[1]))
        code = enroll_cli(["--gallery", str(root), "--out", str(out), *FAST])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, previous)
    assert code == 2 and "File too large" in capsys.readouterr().err.strip().splitlines()[-1]
    assert (out / GALLERY_FILE).read_bytes() == old and len(load_gallery(out)) == 22
    assert sorted(p.name for p in out.iterdir()) == [".lock", GALLERY_FILE]


def test_make_enroll_and_identify_pass_the_variables(make_dry_run):
    lines = [" ".join(line.split()) for line in make_dry_run("enroll", "GALLERY=/data/people", "REBUILD=1").splitlines()]
    assert any("recognition.enroll --gallery /data/people --out build/gallery " in line and "--rebuild" in line
               for line in lines)
    lines = [" ".join(line.split()) for line in make_dry_run("identify", "IMAGES=a.jpg b/", "THRESHOLD=1.1").splitlines()]
    assert any("recognition.identify --images a.jpg b/ --gallery build/gallery/gallery.npz --out build/identify" in line
               and "--threshold 1.1" in line for line in lines)


def test_the_gallery_benchmark_runs_and_prints_each_figure(capsys):
    """make bench's gallery part on a small gallery, one repeat: it crashed once on a renamed setting."""
    from benchmarks.bench_gallery import bench_identify, bench_search

    bench_search([200], [5], None)
    bench_identify(faces=3, size=200, threads=1, repeats=1)
    out = capsys.readouterr().out
    assert "identify: a 600x120 photo of 3 faces" in out and "for each further photo of a run" in out
    assert "identify as a command (python -m recognition.identify, one photo, best of 1):" in out
