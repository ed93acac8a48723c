"""Identification on unseen people (evaluation.ident): the protocol's maths on tiny hand-made
distance matrices, then the stage end to end on the demo people with a tiny trained embedder."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from annotations.lfw import Person
from evaluation.ident import (IdentEvalConfig, cli, dir_at, distance_matrix, false_alarm_rate, figures,
                              figures_from_csv, gallery_distances, main, open_set_threshold, rank_k, ranks, split)
from recognition.gallery import Gallery
from test_recognition import fold2, people, trained  # noqa: F401  (the session fixtures)

# Gallery people A, B, C. Probe 0 (A) is nearest A; probe 1 (A) is nearer B; probe 2 (B) ties B with C
# (a tie counts against it: rank 2); probe 3 (C) had no face (NaN row).
DIST = np.array([[0.1, 0.5, 0.9], [0.6, 0.4, 0.8], [0.7, 0.3, 0.3], [np.nan] * 3])
GALLERY = ["A", "B", "C"]
PROBES = ["A", "A", "B", "C"]
# Unknown probes' best distances; -inf: one without a face, a false alarm at every finite threshold.
UNKNOWN = [0.2, 0.45, 0.8, 1.0, -math.inf]


def test_split_takes_each_first_image_as_the_gallery():
    ppl = [Person("Ann", 3, 0, 1), Person("Bob", 1, 0, 2), Person("Cid", 2, 0, 3)]
    gallery, known, unknown = split(ppl)
    assert gallery == ["Ann/Ann_0001.jpg", "Cid/Cid_0001.jpg"]
    assert known == ["Ann/Ann_0002.jpg", "Ann/Ann_0003.jpg", "Cid/Cid_0002.jpg"]
    assert unknown == ["Bob/Bob_0001.jpg"]


def test_distance_matrix_is_every_probe_against_every_gallery_face():
    # (0.6 - 1)^2 + 0.8^2 = 0.8, 0.6^2 + (0.8 - 1)^2 = 0.4
    d = distance_matrix(np.array([[1.0, 0.0], [0.6, 0.8]]), np.array([[1.0, 0.0], [0.0, 1.0]]))
    assert d == pytest.approx(np.array([[0.0, 2.0], [0.8, 0.4]]))


def test_the_gallery_search_gives_every_distance_in_row_order():
    rng = np.random.default_rng(0)
    g = rng.normal(size=(5, 8)).astype(np.float32)
    q = rng.normal(size=(3, 8)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    d = gallery_distances(Gallery(g, list("abcde")), q)
    assert d.shape == (3, 5) and np.allclose(d, distance_matrix(q, g), atol=1e-5)


def test_ranks_count_ties_against_the_probe_and_a_failed_probe_is_never_found():
    r = ranks(DIST, GALLERY, PROBES)
    assert r.tolist() == [1, 2, 2, math.inf]
    assert ranks(DIST[:1], ["B", "C", "D"], ["A"]).tolist() == [math.inf]  # no gallery face of A
    assert [rank_k(r, k) for k in (1, 2, 5)] == [0.25, 0.75, 0.75]


def test_open_set_threshold_is_the_largest_whose_false_alarm_rate_is_at_most_the_target():
    # sorted: -inf 0.2 0.45 0.8 1.0 (n = 5); t = u_{floor(f n) + 1}
    assert open_set_threshold(UNKNOWN, 0.01) == -math.inf  # floor(0.05) = 0: even the failed probe is too many
    assert false_alarm_rate(UNKNOWN, -math.inf) == 0.0
    assert open_set_threshold(UNKNOWN, 0.2) == 0.2 and false_alarm_rate(UNKNOWN, 0.2) == 0.2
    assert open_set_threshold(UNKNOWN, 0.5) == 0.45 and false_alarm_rate(UNKNOWN, 0.45) == 0.4
    assert open_set_threshold(UNKNOWN, 0.99) == 1.0 and false_alarm_rate(UNKNOWN, 1.0) == 0.8
    # tied distances: accepting strictly below the tie reaches only FAR 0 where 1/3 was allowed
    assert open_set_threshold([0.3, 0.3, 0.5], 0.34) == 0.3 and false_alarm_rate([0.3, 0.3, 0.5], 0.3) == 0.0
    assert open_set_threshold([], 0.1) == math.inf


def test_dir_needs_rank_one_and_a_distance_below_the_threshold():
    r = ranks(DIST, GALLERY, PROBES)
    best = np.array([0.1, 0.4, 0.3, math.inf])
    assert dir_at(r, best, 0.2) == 0.25  # probe 0 only
    assert dir_at(r, best, 0.05) == 0.0  # probe 0 is rank 1 but not below
    assert dir_at(r, best, math.inf) == rank_k(r, 1)  # no threshold: closed-set rank-1
    fig = figures(r, best, UNKNOWN, (1, 2), (0.2, 0.5))
    assert fig["rank"] == {"1": 0.25, "2": 0.75}
    assert fig["dir"]["0.2"] == {"threshold": 0.2, "far": 0.2, "dir": 0.25}
    assert fig["dir"]["0.5"] == {"threshold": 0.45, "far": 0.4, "dir": 0.25}


def _people_file(people_dir, tmp_path):
    """The demo people with fold 2's Demo_Person_01 listed with one image: an unknown probe."""
    text = (people_dir / "people.txt").read_text().replace("Demo_Person_01\t5", "Demo_Person_01\t1")
    path = tmp_path / "people.txt"
    path.write_text(text)
    return path


def test_eval_ident_scores_unseen_people_and_probes_csv_recomputes_it(trained, people, tmp_path):  # noqa: F811
    cfg = IdentEvalConfig(images=str(people / "images"), people=str(_people_file(people, tmp_path)),
                          out=str(tmp_path / "ident"), embedder=str(trained), fold=2, fars=(0.01, 0.5),
                          aligned=str(people / "build" / "aligned"), progress=False)
    results = main(cfg)
    # fold 2: 6 people; 5 of 5 images (gallery 5, known 20), Demo_Person_01 of 1 (unknown 1)
    assert (results["gallery"], results["known_probes"], results["unknown_probes"]) == (5, 20, 1)
    again = figures_from_csv(tmp_path / "ident" / "probes.csv", cfg.ranks, cfg.fars)
    assert again["rank"] == results["rank"] and again["dir"] == results["dir"]
    assert 0 <= results["rank"]["1"] <= results["rank"]["5"] <= 1
    assert json.loads((tmp_path / "ident" / "results.json").read_text())["embedder_training"]["people"] == 6


def test_people_the_embedder_saw_are_refused_in_one_line(trained, people, tmp_path, capsys):  # noqa: F811
    code = cli(["--images", str(people / "images"), "--people", str(people / "people.txt"), "--fold", "1",
                "--out", str(tmp_path / "x"), "--embedder", str(trained), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "was trained on 6 of these people" in err[0]
    assert not (tmp_path / "x" / "results.json").exists()
