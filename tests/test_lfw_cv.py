"""make cv-lfw's figure: one recipe and one detector for all its folds, or a refusal naming the folds to redo."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from child_env import REPO, child_env
from evaluation.lfw_cv import combine


def fold_result(k: int, epochs: int = 24, weights: str = "shipped", size: int = 64) -> dict:
    """A fold's results.json as evaluation.lfw writes it: the embedder's training record (less the
    people's names) and the alignment that scored its pairs."""
    return {"fold": k, "accuracy_mean": 0.8, "val_mean": 0.1, "far_mean": 0.001, "far_target": 0.001, "auc": 0.9,
            "eer": 0.1, "pairs": 600, "failed_pairs": 0,
            "embedder_training": {"data": f"build/recog/fold-{k}", "data_fingerprint": f"fp{k}", "lfw_fold_left_out": k,
                                  "identities": 1400 + k, "faces": 7000 + k, "people": 1400 + k, "loss": "triplet",
                                  "seed": 0, "only_people": None, "recipe": {"epochs": epochs, "lr": 0.1},
                                  "build": {"align_settings": {"weights": weights, "image_size": size}}},
            "align_settings": {"weights": weights, "image_size": size}}


def test_folds_of_one_recipe_combine_whatever_their_people():
    combined = combine([fold_result(k) for k in (1, 2, 3)])
    assert combined["folds"] == [1, 2, 3] and combined["category"] is None  # results from before categories


def test_lfw_category_follows_the_training_record():
    from evaluation.lfw import lfw_category

    assert lfw_category(None) == "embedder of unknown training data"
    assert lfw_category({"build": {"align": "similarity"}}) == "unrestricted, no outside data"
    assert lfw_category({"build": {"outside_roots": []}}) == "unrestricted, no outside data"
    assert lfw_category({"build": {"outside_roots": ["celeba", "casia"]}}) == \
        "unrestricted, labeled outside data: celeba, casia"
    outside = [{**fold_result(k), "category": "unrestricted, labeled outside data: celeba"} for k in (1, 2)]
    assert combine(outside)["category"] == "unrestricted, labeled outside data: celeba"


@pytest.mark.parametrize("other, named", [({"epochs": 2}, "training.recipe.epochs 24 against 2"),
                                          ({"weights": "original:w"}, 'scoring.weights "shipped" against "original:w"'),
                                          ({"size": 96}, "training.build.align_settings.image_size 64 against 96")])
def test_folds_of_another_recipe_or_detector_are_refused_naming_the_folds_to_redo(other, named):
    results = [fold_result(1), fold_result(2, **other), fold_result(3)]
    with pytest.raises(ValueError) as refused:
        combine(results)
    message = str(refused.value)
    assert "folds 2 differ from folds 1, 3" in message and "redo folds 2 " in message and named in message


def test_a_fold_scored_as_an_unknown_embedder_is_another_recipe():
    unknown = {**fold_result(2), "embedder_training": "embedder of unknown training data"}
    with pytest.raises(ValueError, match="folds 2 differ from folds 1, 3"):
        combine([fold_result(1), unknown, fold_result(3)])


def test_the_cli_refuses_mixed_folds_in_one_line(tmp_path):
    paths = []
    for k, epochs in ((1, 24), (2, 24), (3, 12), (4, 12), (5, 24)):
        path = tmp_path / f"fold-{k}" / "results.json"
        path.parent.mkdir()
        path.write_text(json.dumps(fold_result(k, epochs=epochs)))
        paths.append(str(path))
    done = subprocess.run([sys.executable, "-m", "evaluation.lfw_cv", "--out", str(tmp_path / "cv.json"), "--folds",
                           *paths], capture_output=True, text=True, cwd=REPO, env=child_env())
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "redo folds 3 4 " in done.stderr and not (tmp_path / "cv.json").exists()
