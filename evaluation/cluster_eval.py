"""Scoring a clustering of faces against the people's names: pure functions, and a reader of ``clusters.csv``.

    python -m evaluation.cluster_eval --clusters build/cluster/clusters.csv     # names: each image's top folder

Each face has a predicted cluster (``UNCLUSTERED``, -1, for a face the clustering put with no one)
and a true person. The figures:

* **pairwise** precision, recall and F1 over the unordered pairs of faces: precision is the share
  of the pairs put in one cluster that are one person, recall the share of one person's pairs put
  in one cluster (counted from the contingency table: ``sum C(n_ij, 2)`` over cluster x person);
* **BCubed** precision, recall and F (Amigo et al. 2009, "A comparison of extrinsic clustering
  evaluation metrics"): per face, the share of its cluster that is its person and the share of its
  person that is in its cluster, each averaged over the faces; F is their harmonic mean;
* **clusters against people**: the number of clusters (two faces or more), of unclustered faces,
  and of people (and of people with two faces or more, the most clusters a perfect result has).

An unclustered face counts as a cluster of its own (a singleton): it is in no predicted pair, so it
costs pairwise recall and never precision; its BCubed precision is 1 and its recall 1 / (its
person's faces). A precision with no pair predicted at all is 1 (no wrong pair was claimed), and a
recall with no true pair is 1; F of two zeros is 0.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

UNCLUSTERED = -1


def _codes(values) -> np.ndarray:
    """Integer codes of labels (any hashable values), equal labels equal codes."""
    return np.unique(np.asarray(values), return_inverse=True)[1].reshape(-1)


def singletons(clusters) -> np.ndarray:
    """Cluster codes in which each ``UNCLUSTERED`` face is a cluster of its own."""
    c = np.asarray(clusters, dtype=np.int64).reshape(-1).copy()
    noise = c == UNCLUSTERED
    c[noise] = c.max(initial=0) + 1 + np.arange(noise.sum())
    return c


def contingency(clusters, people) -> np.ndarray:
    """(clusters, people) counts of faces; an unclustered face is its own cluster."""
    c, p = _codes(singletons(clusters)), _codes(people)
    if len(c) != len(p):
        raise ValueError(f"one cluster and one person per face: {len(c)} clusters, {len(p)} people")
    table = np.zeros((c.max(initial=-1) + 1, p.max(initial=-1) + 1), np.int64)
    np.add.at(table, (c, p), 1)
    return table


def _pairs(n):
    n = np.asarray(n, dtype=np.int64)
    return int((n * (n - 1) // 2).sum())


def _f(precision: float, recall: float) -> float:
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def pairwise(clusters, people) -> dict:
    """Pairwise precision, recall and F1, with the pair counts they come from."""
    table = contingency(clusters, people)
    together, same = _pairs(table.sum(axis=1)), _pairs(table.sum(axis=0))
    both = _pairs(table)
    precision = both / together if together else 1.0
    recall = both / same if same else 1.0
    return {"precision": precision, "recall": recall, "f1": _f(precision, recall), "pairs_together": together,
            "pairs_same_person": same, "pairs_both": both}


def bcubed(clusters, people) -> dict:
    """BCubed precision, recall and F (Amigo et al. 2009)."""
    table = contingency(clusters, people)
    faces = table.sum()
    if not faces:
        return {"precision": 1.0, "recall": 1.0, "f": 1.0}
    # Each face of cell (i, j) has precision n_ij / |cluster i| and recall n_ij / |person j|.
    precision = float((table ** 2 / np.maximum(table.sum(axis=1, keepdims=True), 1)).sum() / faces)
    recall = float((table ** 2 / np.maximum(table.sum(axis=0, keepdims=True), 1)).sum() / faces)
    return {"precision": precision, "recall": recall, "f": _f(precision, recall)}


def counts(clusters, people) -> dict:
    """Clusters (of two faces or more) against people."""
    c = np.asarray(clusters, dtype=np.int64).reshape(-1)
    sizes = np.unique(c[c != UNCLUSTERED], return_counts=True)[1]
    per_person = np.unique(np.asarray(people), return_counts=True)[1]
    return {"faces": int(len(c)), "clusters": int((sizes >= 2).sum()),
            "unclustered_faces": int((c == UNCLUSTERED).sum() + (sizes == 1).sum()),
            "people": int(len(per_person)), "people_with_two_or_more": int((per_person >= 2).sum())}


def score(clusters, people) -> dict:
    """Every figure of the module docstring, named."""
    pw, b3 = pairwise(clusters, people), bcubed(clusters, people)
    return {"pairwise_precision": pw["precision"], "pairwise_recall": pw["recall"], "pairwise_f1": pw["f1"],
            "bcubed_precision": b3["precision"], "bcubed_recall": b3["recall"], "bcubed_f": b3["f"],
            **counts(clusters, people), "pairs": {k: v for k, v in pw.items() if k.startswith("pairs_")}}


def read_clusters_csv(path) -> tuple[list[int], list[str]]:
    """The clusters of ``recognition.cluster``'s ``clusters.csv`` and each face's person, the top folder
    of its image (LFW's ``<name>/<name>_NNNN.jpg``); rows without a face are left out."""
    clusters, people = [], []
    with Path(path).open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not {"image", "face", "cluster"} <= set(reader.fieldnames or ()):
            raise ValueError(f"{path}: not a clusters.csv of recognition.cluster (columns {reader.fieldnames})")
        for row in reader:
            if row["face"] == "":
                continue
            parts = Path(row["image"]).parts
            people.append(parts[0] if len(parts) > 1 else "")
            clusters.append(int(row["cluster"]))
    return clusters, people


@dataclass(frozen=True)
class ClusterScoreConfig:
    clusters: str
    """clusters.csv of make cluster; each face's person is its image's top folder."""
    out: str | None = None
    """Write the figures to this JSON file too (atomically); None: print them only."""


def main(cfg: ClusterScoreConfig) -> dict:
    clusters, people = read_clusters_csv(cfg.clusters)
    if any(p == "" for p in people):
        raise ValueError(f"{cfg.clusters}: an image outside a folder has no person to score against")
    figures = score(clusters, people)
    if cfg.out:
        from core.atomic import atomic_write_json

        atomic_write_json(cfg.out, {"clusters_csv": str(cfg.clusters), **figures})
    print(f"{figures['faces']} faces of {figures['people']} people: {figures['clusters']} clusters, "
          f"{figures['unclustered_faces']} unclustered; pairwise P {figures['pairwise_precision']:.4f} "
          f"R {figures['pairwise_recall']:.4f} F1 {figures['pairwise_f1']:.4f}; BCubed P {figures['bcubed_precision']:.4f} "
          f"R {figures['bcubed_recall']:.4f} F {figures['bcubed_f']:.4f}")
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    from core.stage import run_stage

    sys.exit(run_stage(ClusterScoreConfig, main))
