"""A stand-in for the venv's python in Makefile tests: stages run in milliseconds, arguments recorded.

``make PY=<this file> ...`` runs ``<this file> -m core.launch MODULE ARGS...`` for every stage: the
call is appended to ``$FAKE_STAGE_LOG`` (one JSON list per line, exactly the argv the stage got)
and the file that make waits for is written, so that make's own logic (what it reruns, what each
command receives) is tested without torch. Anything else (the recipes' ``core/make_inputs.py``)
runs in the real interpreter.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

# What each stage writes that make takes as its target: (option naming it, file inside it or "")
OUTPUTS = {
    "prepare.generate": ("--out", "manifest.json"),
    "trainers.train": ("--export", ""),
    "annotations.subset": ("--out", ""),
    "evaluation.roc": ("--out", "summary.json"),
    "evaluation.wider_eval": ("--pred", "results.json"),
    "evaluation.landmarks": ("--out", "results.json"),
    "evaluation.stage_recall": ("--out", "results.json"),
    "detector.export": ("--out", "mtcnn.json"),
    "prepare.identities": ("--out", "manifest.json"),
    "trainers.embed": ("--out", "embedder.pt"),
    "evaluation.lfw": ("--out", "results.json"),
    "evaluation.pairs": ("--out", "results.json"),
    "annotations.pairs_csv": ("--out", ""),
    "evaluation.lfw_cv": ("--out", ""),
    "recognition.export_embedder": ("--out", "embedder.json"),
    "evaluation.calibrate": ("--out", "calibration.json"),
    "demo.data": ("--out", "wider_face_split/wider_face_train_bbx_gt.txt"),
    "demo.identities": ("--out", "pairs.txt"),
}
# Files a demo builder also leaves for the stages after it
ALSO = {"demo.data": ("landmarks/trainImageList.txt", "wider_face_split/wider_face_val_bbx_gt.txt"), "demo.identities": ("people.txt",)}


def main(argv: list[str]) -> int:
    if argv[:2] != ["-m", "core.launch"]:
        os.execv(sys.executable, [sys.executable, *argv])
    module, args = argv[2], argv[3:]
    with open(os.environ["FAKE_STAGE_LOG"], "a") as log:
        log.write(json.dumps([module, *args]) + "\n")
    if module in OUTPUTS:
        option, inside = OUTPUTS[module]
        root = Path(args[args.index(option) + 1])
        for name in (inside, *ALSO.get(module, ())):
            target = root / name if name else root
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(f"{module} {' '.join(args)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
