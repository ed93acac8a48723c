"""LFW's protocol files, the identity folder, P x K batches and the face records: exact cases."""

from __future__ import annotations

import numpy as np
import pytest

from annotations.errors import AnnotationError
from annotations.identities import read_identity_folder
from annotations.lfw import fold_people, image_path, parse_pairs, parse_people
from annotations.wider import parse_wider_text
from conftest import SHARED_DATA
from lmdb_builders.faces import FACES, decode_face_records, make_face_records
from lmdb_builders.identity import IdentityBatchSampler, split_identities
from lmdb_builders.schema import SchemaError

PEOPLE = "2\n2\nAnn\t2\nBob\t1\n1\nCid\t3\n"
PAIRS = "2\t1\nAnn\t1\t2\nAnn\t1\tBob\t1\nCid\t1\t3\nCid\t2\tAnn\t2\n"


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_people_and_pairs_files_with_their_folds(tmp_path):
    people = parse_people(write(tmp_path, "people.txt", PEOPLE))
    assert [(p.name, p.images, p.fold, p.line) for p in people] == [("Ann", 2, 0, 3), ("Bob", 1, 0, 4), ("Cid", 3, 1, 6)]
    assert fold_people(people, 1) == {"Cid"}
    pairs = parse_pairs(write(tmp_path, "pairs.txt", PAIRS))
    assert [(p.fold, p.first, p.second, p.same) for p in pairs] == [
        (0, "Ann/Ann_0001.jpg", "Ann/Ann_0002.jpg", True), (0, "Ann/Ann_0001.jpg", "Bob/Bob_0001.jpg", False),
        (1, "Cid/Cid_0001.jpg", "Cid/Cid_0003.jpg", True), (1, "Cid/Cid_0002.jpg", "Ann/Ann_0002.jpg", False)]
    view1 = parse_pairs(write(tmp_path, "dev.txt", "1\nAnn\t1\t2\nAnn\t1\tBob\t1\n"))
    assert {p.fold for p in view1} == {0} and image_path("Ann", 12) == "Ann/Ann_0012.jpg"
    assert [p.name for p in parse_people(write(tmp_path, "devpeople.txt", "2\nAnn\t2\nBob\t1\n"))] == ["Ann", "Bob"]


@pytest.mark.parametrize("parse, text, where, message", [
    (parse_people, "2\n2\nAnn\t2\nAnn\t1\n1\nCid\t3\n", ":4:", "person Ann is listed twice (first at line 3)"),
    (parse_people, "2\n2\nAnn\t2\nBob\tx\n1\nCid\t3\n", ":4:", "expected a number of images (integers), got 'x'"),
    (parse_people, "2\n3\nAnn\t2\nBob\t1\n1\nCid\t3\n", ":5:", "expected 'name  number_of_images', got '1'"),
    (parse_people, "2\n2\nAnn\t2\nBob\t1\n", ":1:", "declares 2 folds but the file ends after 1"),
    (parse_pairs, "2\t1\nAnn\t1\t2\nAnn\t1\tBob\t1\nAnn\t1\t2\nCid\t2\tAnn\t2\n", ":4:",
     "pair Ann/Ann_0001.jpg Ann/Ann_0002.jpg is listed twice (first at line 2)"),
    (parse_pairs, "2\t1\nAnn\t1\t2\nAnn\t1\tBob\t1\nCid\t1\t3\n", ":1:", "(4 lines) but 3 follow"),
    (parse_pairs, "1\t1\nAnn\t1\tBob\t1\nAnn\t1\t2\n", ":2:", "expected 'name  i  j' (a matched pair) in fold 1"),
])
def test_a_malformed_people_list_or_pairs_file_is_one_line_naming_its_line(tmp_path, parse, text, where, message):
    path = write(tmp_path, f"{parse.__name__}.txt", text)
    with pytest.raises(AnnotationError) as err:
        parse(path)
    assert str(err.value).startswith(f"{path}{where}") and message in str(err.value)


def test_a_wider_file_naming_an_image_twice_is_one_line_with_both_lines(tmp_path):
    text = "0--a/1.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n0--a/2.jpg\n0\n0 0 0 0 0 0 0 0 0 0\n0--a/1.jpg\n1\n5 6 7 8 0 0 0 0 0 0\n"
    path = write(tmp_path, "gt.txt", text)
    with pytest.raises(AnnotationError) as err:
        parse_wider_text(path)
    assert str(err.value) == f"{path}:7: image 0--a/1.jpg is listed twice (first at line 1); remove one of the two lines"


def test_identity_folder_is_sorted_counts_loose_images_and_leaves_out(tmp_path):
    for rel in ("b/x.jpg", "a/2.png", "a/1.jpg", "a/sub/3.jpg", "loose.jpg", "a/notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    folder = read_identity_folder(tmp_path)
    assert folder.identities == ("a", "b") and folder.loose == 1
    assert folder.images == ((0, "a/1.jpg"), (0, "a/2.png"), (0, "a/sub/3.jpg"), (1, "b/x.jpg"))
    assert folder.counts() == [3, 1]
    assert folder.without({"a"}).images == ((0, "b/x.jpg"),)
    with pytest.raises(ValueError, match="no images in <identity>/<image> folders"):
        read_identity_folder(tmp_path / "a" / "sub")


LABELS = np.repeat(np.arange(6), [4, 3, 2, 5, 1, 3])


def test_identity_split_holds_out_whole_people():
    train, val = split_identities(LABELS, 0.34, seed=0)
    assert len(set(LABELS[train]) & set(LABELS[val])) == 0 and len(set(LABELS[val])) == 2
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(LABELS)))
    assert np.array_equal(split_identities(LABELS, 0.34, seed=0)[1], val)


def test_pk_batches_hold_p_different_people_with_k_images_each_and_resume():
    idx = np.arange(len(LABELS))
    sampler = IdentityBatchSampler(LABELS, idx, people=3, per_person=2, seed=1, batches_per_epoch=7)
    batches = list(sampler)
    assert len(batches) == 7
    seen = []
    for batch in batches:
        people, counts = np.unique(LABELS[batch], return_counts=True)
        assert len(people) == 3 and counts.tolist() == [2, 2, 2]
        seen.extend(people)
        repeated = {int(LABELS[i]) for i in batch if batch.count(i) > 1}
        assert repeated <= {4}  # only person 4, with one image, repeats one
    assert set(seen) == set(range(6))  # each person comes before any returns
    sampler.set_epoch(0, start_batch=4)
    assert list(sampler) == batches[4:]
    sampler.set_epoch(1)
    assert list(sampler) != batches
    again = IdentityBatchSampler(LABELS, idx, people=3, per_person=2, seed=1, batches_per_epoch=7)
    assert list(again) == batches


def test_people_without_enough_images_are_drawn_with_replacement():
    only = np.flatnonzero(LABELS == 4)  # one image
    sampler = IdentityBatchSampler(LABELS, np.concatenate([only, np.flatnonzero(LABELS == 0)]), 2, 3, seed=0)
    for batch in sampler:
        assert batch.count(int(only[0])) == 3


def test_face_records_round_trip():
    crops = np.arange(2 * 16 * 16 * 3, dtype=np.uint8).reshape(2, 16, 16, 3)
    recs = make_face_records(crops, [3, 7], [0, 1])
    back = decode_face_records([r.tobytes() for r in recs], 16)
    assert back["identity"].tolist() == [3, 7] and np.array_equal(back["image"], crops)
    assert FACES.size_of(recs) == 16 and FACES.kind_names == {0: "face"}
    item = recs.dtype.itemsize
    with pytest.raises(SchemaError, match=rf"^face records are not {item} bytes long \(size 16\)$"):
        decode_face_records([recs[0].tobytes(), recs[1].tobytes()[:-1]], 16)
    stale = bytes([9]) + recs[1].tobytes()[1:]  # the second record of another version: the one named
    with pytest.raises(SchemaError, match=r"^face record schema version 9, this reader reads version 1$"):
        decode_face_records([recs[0].tobytes(), stale], 16)


@pytest.mark.slow
def test_the_shared_lfw_files_parse_with_disjoint_folds():
    lfw = SHARED_DATA / "lfw"
    if not (lfw / "people.txt").is_file():
        pytest.skip("../shared/data/lfw is absent")
    people = parse_people(lfw / "people.txt")
    assert len(people) == 5749 and sum(p.images for p in people) == 13233
    pairs = parse_pairs(lfw / "pairs.txt")
    assert len(pairs) == 6000 and sum(p.same for p in pairs) == 3000
    fold_of = {p.name: p.fold for p in people}
    assert all(fold_of[p.first.split("/")[0]] == fold_of[p.second.split("/")[0]] == p.fold for p in pairs)
