"""The honest 10-fold LFW figure from ten fold models: ``make cv-lfw``.

    python -m evaluation.lfw_cv --out build/cv-lfw/results.json build/cv-lfw/fold-*/results.json

Each input is ``make eval-lfw FOLD=k``'s ``results.json`` of a model trained without fold k's
people; the figure is the mean and standard deviation over the folds of each fold's accuracy (and
VAL at the FAR target, AUC, EER), with the failed pairs added up. Written atomically.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.atomic import atomic_write_json
from core.stage import run_stage


@dataclass(frozen=True)
class CrossValConfig:
    out: str
    """The combined results.json to write."""
    folds: tuple[str, ...]
    """Each fold's results.json (make eval-lfw FOLD=k)."""


# What may differ between the folds of one figure: each fold's own people and its build's name.
PER_FOLD = ("data", "data_fingerprint", "lfw_fold_left_out", "identities", "faces", "people")


def recipe_of(result: dict) -> dict:
    """What made a fold's figure, less what is the fold's own: the embedder's training recipe and
    identity build (its training record) and the detector and alignment that scored the pairs."""
    training = result.get("embedder_training")
    if not isinstance(training, dict):  # "embedder of unknown training data": that is its recipe
        training = {"unknown": training}
    return {"training": {k: v for k, v in training.items() if k not in PER_FOLD},
            "scoring": result.get("align_settings")}


def _differences(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [f"{prefix.rstrip('.')} {json.dumps(a)} against {json.dumps(b)}"]


def check_one_recipe(results: list[dict]) -> None:
    """Refuse folds made by different recipes or detectors (a 10-fold figure mixing them measures
    neither), naming the folds to redo: those outside the largest group."""
    groups: dict[str, list[int]] = {}
    for r in results:
        groups.setdefault(json.dumps(recipe_of(r), sort_keys=True), []).append(r["fold"])
    if len(groups) == 1:
        return
    ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[1]))
    main_recipe = json.loads(ordered[0][0])
    redo = sorted(k for _, fold_list in ordered[1:] for k in fold_list)
    first_other = next(r for r in results if r["fold"] == redo[0])
    diff = _differences(main_recipe, recipe_of(first_other))
    raise ValueError(f"the folds were made by different recipes or detectors: folds {', '.join(map(str, redo))} differ "
                     f"from folds {', '.join(map(str, ordered[0][1]))} ({'; '.join(diff[:3])}"
                     f"{'; ...' if len(diff) > 3 else ''}); redo folds {' '.join(map(str, redo))} with the others' "
                     f"settings (make cv-lfw redoes a fold whose settings changed)")


def combine(results: list[dict]) -> dict:
    folds = [r["fold"] for r in results]
    if None in folds or len(set(folds)) != len(folds):
        raise ValueError(f"each input must score one fold, each a different one; got folds {folds}")
    check_one_recipe(results)
    acc = np.array([r["accuracy_mean"] for r in results])
    val = np.array([r["val_mean"] for r in results])
    return {"folds": folds, "accuracy_mean": float(acc.mean()), "accuracy_std": float(acc.std()),
            "fold_accuracy": acc.tolist(), "val_mean": float(val.mean()), "val_std": float(val.std()),
            "far_mean": float(np.mean([r["far_mean"] for r in results])), "far_target": results[0]["far_target"],
            "auc_mean": float(np.mean([r["auc"] for r in results])), "eer_mean": float(np.mean([r["eer"] for r in results])),
            "pairs": int(sum(r["pairs"] for r in results)), "failed_pairs": int(sum(r["failed_pairs"] for r in results)),
            # one recipe (checked above), so one category; absent from results written before categories
            "category": results[0].get("category")}


def main(cfg: CrossValConfig) -> dict:
    from core.outputs import real_path

    if real_path(cfg.out) in {real_path(p) for p in cfg.folds}:
        raise ValueError(f"--out {cfg.out} is one of the results to combine: it would be replaced; write elsewhere")
    results = []
    for path in cfg.folds:
        try:
            results.append(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: not a readable results.json ({e})") from None
    combined = combine(results)
    atomic_write_json(cfg.out, combined)
    category = f"{combined['category']}; " if combined["category"] else ""
    print(f"LFW {len(results)}-fold ({category}a model per fold, never trained on its people): accuracy "
          f"{combined['accuracy_mean']:.4f} +- {combined['accuracy_std']:.4f}, VAL {combined['val_mean']:.4f} "
          f"+- {combined['val_std']:.4f} @ FAR {combined['far_mean']:.5f}; {combined['failed_pairs']} of "
          f"{combined['pairs']} pairs without a face -> {cfg.out}")
    return combined


if __name__ == "__main__":
    sys.exit(run_stage(CrossValConfig, main))
