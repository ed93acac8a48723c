"""Settings that cannot train (issue #30, rule 7), injected: a kind ratio or a batch too small to give
a weighted loss term its samples, every loss weight 0, more people per batch than the identity
build's training part holds, and identity builds too small to train or to validate.

Each is refused before any training with one line naming the option and exit code 2.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import trainers.train
from lmdb_builders.faces import FACES, make_face_records
from lmdb_builders.manifest import fingerprint
from lmdb_builders.schema import Kind
from lmdb_builders.synthetic import synthetic_records
from lmdb_builders.writer import ShardWriter, WriterConfig
from trainers.config import TrainConfig, parse_args
from trainers.embed import cli as embed_cli
from trainers.train import cli as train_cli

TRAIN = "python -m trainers.train: error: "
EMBED = "python -m trainers.embed: error: "

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def work(monkeypatch):
    """Counts training epochs run: a refusal must come before the first."""
    calls = {"epochs": 0}
    real = trainers.train.train_one_epoch

    def epoch(*args, **kwargs):
        calls["epochs"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(trainers.train, "train_one_epoch", epoch)
    return calls


def last_error(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.strip().splitlines() if line]


@pytest.mark.parametrize("argv, message", [
    (["--kind-ratio", "1", "0", "0", "0"],
     "--kind-ratio 1 0 0 0 gives no positive samples, and the classification loss"),
    (["--kind-ratio", "0", "1", "1", "1"], "--kind-ratio 0 1 1 1 gives no negative samples"),
    (["--loss-weights", "0", "1", "0", "--kind-ratio", "1", "0", "0", "1"],
     "--kind-ratio 1 0 0 1 gives no positive or part samples, and the box loss"),
    (["--loss-weights", "0", "0", "0"], "--loss-weights 0 0 0 weighs every term 0"),
    (["--loss-weights", "1", "-1", "0"], "--loss-weights needs three finite weights >= 0"),
    (["--loss-weights", "1", "nan", "0"], "--loss-weights needs three finite weights >= 0"),
    (["--batch-size", "1"], "--batch-size must be >= 2"),
    (["--batch-size", "2"], "--batch-size 2 is too small for --kind-ratio 3 1 1 2: a batch would hold no positive "
                            "sample; use at least 3"),
    (["--batch-size", "8", "--kind-ratio", "100", "1", "0", "0"], "--batch-size 8 is too small for --kind-ratio "
                                                                  "100 1 0 0"),
])
def test_settings_that_cannot_train_the_detector_are_usage_errors_naming_the_option(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--net", "pnet", *argv])
    lines = last_error(capsys)
    assert exit_.value.code == 2 and message in lines[-1], lines
    assert "Traceback" not in "\n".join(lines)


def test_settings_that_do_train_are_accepted():
    # the shipped recipes, a ratio without part faces (positives feed the box loss), a box-only net
    # fed by part faces, and the smallest batch that holds every needed kind
    for changes in ({}, {"kind_ratio": (3, 3, 1, 2)}, {"kind_ratio": (3, 3, 0, 2)}, {"batch_size": 3},
                    {"loss_weights": (0, 1, 0), "kind_ratio": (1, 0, 1, 0)}, {"loss_weights": (1, 1, 5)},
                    {"loss_weights": (1, 0, 0), "kind_ratio": (1, 1, 0, 0), "batch_size": 2}):
        TrainConfig(net="rnet", **changes)


def detector_build(folder: Path) -> Path:
    """A 12 px build with every kind, made with a landmark list."""
    counts = {Kind.NEGATIVE: 60, Kind.POSITIVE: 30, Kind.PART: 30, Kind.LANDMARK: 30}
    writer = ShardWriter(folder, fingerprint({"settings-test": 1}), WriterConfig())
    rng = np.random.default_rng(0)
    writer.add_image(0, [synthetic_records(rng, 12, kind, n) for kind, n in counts.items()])
    writer.finish(1, {"net_size": 12, "net_sizes": [12], "seed": 0,
                      "config": {"inputs": {"wider_txt": "0" * 16, "landmarks": "1" * 16}}})
    return folder


def test_a_ratio_without_landmarks_is_refused_where_the_landmark_head_trains(tmp_path, capsys, work):
    data = detector_build(tmp_path / "pnet")
    argv = ["--net", "pnet", "--data", str(data), "--out", str(tmp_path / "out"), "--epochs", "1",
            "--batches-per-epoch", "1", "--batch-size", "16", "--workers", "0", "--no-progress",
            "--kind-ratio", "3", "1", "1", "0"]
    assert train_cli(argv) == 2
    assert last_error(capsys) == [
        f"{TRAIN}--kind-ratio 3 1 1 0 gives no landmark samples, and the pnet landmark loss (landmark weight 0.5, "
        "--loss-weights) needs them on this build: give them a share, or weigh the term 0 or use --no-landmark-head"]
    assert work["epochs"] == 0
    # without the landmark head, or with its weight 0, the same ratio trains
    assert train_cli([*argv, "--no-landmark-head"]) == 0 and work["epochs"] == 1


def identity_build(folder: Path, faces_per_person: list[int], size: int = 16) -> Path:
    """An identity build (``lmdb_builders.faces`` records) of len(faces_per_person) people."""
    writer = ShardWriter(folder, fingerprint({"people": faces_per_person}), WriterConfig(), spec=FACES)
    rng = np.random.default_rng(1)
    k = 0
    for person, n in enumerate(faces_per_person):
        for _ in range(n):
            crop = rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8)
            writer.add_image(k, [make_face_records(crop, [person], [k])])
            k += 1
    writer.finish(k, {"config": {"fold": None}, "identities": [[f"P{p}", n] for p, n in enumerate(faces_per_person)],
                      "images": [f"P{p}/{i}.jpg" for p, n in enumerate(faces_per_person) for i in range(n)],
                      "report": {}})
    return folder


def embed_args(data: Path, out: Path, *extra: str) -> list[str]:
    people = [] if "--people" in extra else ["--people", "2"]
    return ["--data", str(data), "--out", str(out), "--epochs", "1", "--batches-per-epoch", "1", *people,
            "--per-person", "2", "--widths", "8", "8", "16", "16", "--dim", "16", "--workers", "0", "--no-progress",
            *extra]


@pytest.mark.parametrize("people, extra, message", [
    ([3], [], "1 identities to train on (--val-fraction 0.05 holds out 0 of its 1 identities); a batch needs at least "
              "2 people, and validation 2 more: rebuild it with at least 4 identities"),
    ([3, 3], [], "--val-fraction 0.05 holds out 0 of its 2 identities, so its validation pairs would be empty and its "
                 "figures NaN (validation needs at least 2, one of them with 2 faces): rebuild it with at least 4 "
                 "identities"),
    ([3, 3, 1, 1], ["--val-fraction", "0.5"], "no held-out identity has 2 faces"),
    ([3, 3, 3, 3, 3, 3], ["--people", "5", "--val-fraction", "0.34"],
     "--people 5 is more than the 4 identities of"),
])
def test_identity_builds_and_batches_that_cannot_train_or_validate_are_refused(tmp_path, capsys, work, people, extra,
                                                                                message, monkeypatch):
    if people == [3, 3, 1, 1]:  # hold out the two single-face people
        monkeypatch.setattr("trainers.embed_task.split_identities",
                            lambda labels, f, seed: (np.flatnonzero(labels < 2), np.flatnonzero(labels >= 2)))
    data = identity_build(tmp_path / "recog", people)
    assert embed_cli(embed_args(data, tmp_path / "out", *extra)) == 2
    lines = last_error(capsys)
    assert len(lines) == 1 and lines[0].startswith(EMBED) and message in lines[0], lines
    assert work["epochs"] == 0 and not (tmp_path / "out" / "embedder.pt").exists()


def test_an_identity_build_that_can_train_and_validate_trains(tmp_path, capsys, work):
    data = identity_build(tmp_path / "recog", [3, 3, 3, 3])
    assert embed_cli(embed_args(data, tmp_path / "out", "--val-fraction", "0.5")) == 0, capsys.readouterr().err
    assert work["epochs"] == 1 and (tmp_path / "out" / "embedder.pt").exists()
