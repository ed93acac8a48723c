"""Clustering faces by person (recognition.cluster) and scoring clusters against names
(evaluation.cluster_eval): exact hand-computed figures, each method on hand-made vectors, and the
stage end to end on the demo people with a tiny trained embedder."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace

import cv2
import numpy as np
import pytest

from evaluation.cluster_eval import bcubed, counts, pairwise, read_clusters_csv, score
from recognition.cluster import ClusterConfig, cli, cluster_vectors, relabel, squared_distance_matrix
from recognition.cluster import main as cluster_main
from test_recognition import fold2, people, trained  # noqa: F401  (the session fixtures)

# Six faces: cluster 0 = a a; cluster 1 = a b b; the c face unclustered (a cluster of its own).
PEOPLE = ["a", "a", "a", "b", "b", "c"]
CLUSTERS = [0, 0, 1, 1, 1, -1]


def test_pairwise_counts_pairs_of_faces():
    # together: C(2,2) + C(3,2) = 4; same person: C(3,2) + C(2,2) = 4; both: a-a in 0, b-b in 1 = 2
    assert pairwise(CLUSTERS, PEOPLE) == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "pairs_together": 4,
                                          "pairs_same_person": 4, "pairs_both": 2}
    assert pairwise([-1, -1, -1], ["a", "a", "b"])["precision"] == 1.0  # no pair claimed, none wrong
    assert pairwise([-1, -1, -1], ["a", "a", "b"])["f1"] == 0.0


def test_bcubed_averages_each_faces_precision_and_recall():
    # precision: 1, 1 (a in 0), 1/3 (a in 1), 2/3, 2/3 (b in 1), 1 (c alone) -> 14/3 / 6 = 7/9
    # recall: 2/3, 2/3, 1/3, 1, 1, 1 -> 14/3 / 6 = 7/9
    b3 = bcubed(CLUSTERS, PEOPLE)
    assert b3["precision"] == pytest.approx(7 / 9) and b3["recall"] == pytest.approx(7 / 9)
    assert b3["f"] == pytest.approx(7 / 9)
    perfect = bcubed([0, 0, 1], ["x", "x", "y"])
    assert perfect == {"precision": 1.0, "recall": 1.0, "f": 1.0}


def test_counts_and_score_name_every_figure():
    assert counts(CLUSTERS, PEOPLE) == {"faces": 6, "clusters": 2, "unclustered_faces": 1, "people": 3,
                                        "people_with_two_or_more": 2}
    s = score(CLUSTERS, PEOPLE)
    assert s["pairwise_f1"] == 0.5 and s["bcubed_f"] == pytest.approx(7 / 9)
    with pytest.raises(ValueError, match="one cluster and one person per face"):
        pairwise([0, 0], ["a"])


def test_relabel_numbers_clusters_largest_first_and_unclusters_small_ones():
    assert relabel([7, 3, 3, 9, 7, 7, 5]).tolist() == [0, 1, 1, -1, 0, 0, -1]
    assert relabel([4, 4, 2, 2], min_size=2).tolist() == [0, 0, 1, 1]  # equal sizes: first face first
    assert relabel([1, 1, 1, -1], min_size=4).tolist() == [-1, -1, -1, -1]


def _two_people() -> np.ndarray:
    """Three faces near (1, 0, 0), two near (0, 1, 0), one at (0, 0, 1): squared distances about 2 across."""
    v = np.array([[1, 0.05, 0], [1, -0.05, 0], [1, 0, 0.05], [0.05, 1, 0], [-0.05, 1, 0], [0, 0, 1]], float)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("method", ["agglomerative", "chinese-whispers", "hdbscan"])
def test_each_method_finds_the_two_people_and_leaves_the_lone_face(method):
    cfg = ClusterConfig(images="x", out="y", method=method, threshold=0.5, min_cluster_size=2)
    labels = cluster_vectors(_two_people(), cfg).tolist()
    assert labels == [0, 0, 0, 1, 1, -1]
    assert cluster_vectors(_two_people()[:1], cfg).tolist() == [-1]  # one face: like no other


def test_squared_distance_matrix_is_exact_on_the_diagonal():
    d = squared_distance_matrix(_two_people())
    assert np.all(np.diag(d) == 0) and np.allclose(d, d.T) and d.min() >= 0
    assert d[0, 5] == pytest.approx(2.0, abs=0.01)


def _photos(people_dir, tmp_path):
    """Three people's images of the demo set (fold 2's, which the tiny embedder did not learn)."""
    root = tmp_path / "photos"
    for name in ("Demo_Person_01", "Demo_Person_03", "Demo_Person_05"):
        shutil.copytree(people_dir / "images" / name, root / name)
    return root


def test_cluster_writes_one_row_per_face_sheets_largest_first_and_a_summary(trained, people, tmp_path):  # noqa: F811
    photos = _photos(people, tmp_path)
    cfg = ClusterConfig(images=str(photos), out=str(tmp_path / "out"), embedder=str(trained), largest=True,
                        threshold=1.0, sheet_columns=4, progress=False)
    summary = cluster_main(cfg)
    rows = list(csv.DictReader((tmp_path / "out" / "clusters.csv").open()))
    faces = [r for r in rows if r["face"] != ""]
    assert len(rows) == 15 and len(faces) == summary["faces"] == 15 - summary["images_without_face"]
    labels = [int(r["cluster"]) for r in faces]
    sizes = summary["cluster_sizes"]
    assert sizes == sorted(sizes, reverse=True) and sum(sizes) + labels.count(-1) == len(faces)
    assert all(int(r["cluster_size"]) == (sizes[int(r["cluster"])] if int(r["cluster"]) >= 0 else 1) for r in faces)
    sheets = sorted(p.name for p in (tmp_path / "out" / "sheets").iterdir())
    assert sheets == [f"cluster_{k:03d}.png" for k in range(len(sizes))] + (["unclustered.png"] if -1 in labels else [])
    if sizes:
        sheet = cv2.imread(str(tmp_path / "out" / "sheets" / "cluster_000.png"))
        assert sheet.shape[0] == 18 + 64 * -(-min(sizes[0], 48) // 4)  # title strip + rows of 64 px crops
    clusters, names = read_clusters_csv(tmp_path / "out" / "clusters.csv")
    assert clusters == labels and set(names) <= {"Demo_Person_01", "Demo_Person_03", "Demo_Person_05"}
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["method"] == "agglomerative"
    # a rerun with one cluster for everything replaces the sheets: no stale cluster_NNN.png stays
    again = cluster_main(replace(cfg, threshold=3.99))
    assert again["clusters"] == 1
    assert sorted(p.name for p in (tmp_path / "out" / "sheets").iterdir()) == ["cluster_000.png"]


def test_bad_input_is_one_line(trained, people, tmp_path, capsys):  # noqa: F811
    photos = _photos(people, tmp_path)
    code = cli(["--images", str(photos), "--out", str(photos / "out"), "--embedder", str(trained), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "lies inside the input --images" in err[0]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "clusters.csv").write_text("my own notes\n")
    code = cli(["--images", str(photos), "--out", str(tmp_path / "mine"), "--embedder", str(trained), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "was not written by" in err[0]
    with pytest.raises(SystemExit):
        cli(["--images", str(photos), "--out", str(tmp_path / "o"), "--threshold", "5"])
    assert "--threshold must be in (0, 4)" in capsys.readouterr().err
