"""Train the face embedder on an identity build: ``make train-embed``.

    python -m trainers.embed --data build/recog/fold-10 --out build/train/embed-fold-10 [--loss arcface|cosface|triplet]
    torchrun --nproc_per_node 2 -m trainers.embed ...      # data-parallel

The detector nets' training loop (``trainers.train``: checkpoints, exact resume, ``--restart``, the
folder lock, devices, mixed precision, DDP, ``log.csv``, ``loss_curve.png``) with the embedder's
parts (``trainers.embed_task``): P x K batches, the triplet loss with semi-hard negatives or a margin
softmax, verification of held-out identities after every epoch. The result, ``<out>/embedder.pt``,
is the net's state dict packed with its training record (the build, the people it learnt, the LFW
fold left out: ``core.weights.pack_weights``), so that the record travels with the file;
``recognition.embedder.load_embedder`` reads it (its shapes give the net), ``embedder.pt.sha256`` holds its
SHA-256 and ``embedder.json`` a readable copy of the record.
Failures with an outside cause end with one line and exit code 2, as ``trainers.train``'s do.
"""

from __future__ import annotations

import sys

from core.stage import run_stage
from trainers.embed_config import PROG, parse_embed_args
from trainers.embed_task import embed_parts
from trainers.train import ONE_LINE_ERRORS, main, one_line


def cli(argv=None) -> int:
    def train(cfg) -> None:
        result = main(cfg, embed_parts)
        if result.weights_path is not None:
            print(f"wrote {result.weights_path}")

    return run_stage(None, train, prog=PROG, argv=argv, errors=ONE_LINE_ERRORS, describe=one_line,
                     parse=lambda argv: parse_embed_args(argv, description=__doc__.split("\n\n")[0]))


if __name__ == "__main__":
    sys.exit(cli())
