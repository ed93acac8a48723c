"""What a training run checks before any work, so that a run that cannot succeed, or that would
destroy an earlier one, stops at once with one line rather than after an epoch or with a net that
never saw a face.

* ``check_writable``: the output folder and the export's folder can be written (a probe file);
* ``check_earlier_run``: an output folder holding checkpoints is continued (``--resume``) or
  started over (``--restart``) only when asked, never overwritten by a plain rerun;
* ``check_kinds``: the training split holds every sample kind the loss needs, and the kind ratio
  gives the landmark term its samples (``check_kind_ratio``);

Each refusal is a ``PreflightError`` whose ``str()`` is one line saying what to do.
"""

from __future__ import annotations

from pathlib import Path

from core.atomic import ensure_writable_folder
from core.outputs import OutputError, check_not_shipped, check_output_apart, real_path
from core.nets import EXTRA_HEAD_PREFIX
from lmdb_builders.schema import KIND_NAMES, Kind
from trainers.checkpoint import foreign_files, latest_epoch
from trainers.config import TrainConfig


class PreflightError(RuntimeError):
    """A run that must not start; ``str()`` is one line."""


def init_file(cfg) -> Path | None:
    """The weights file ``--init`` reads (an input), or None (scratch, or a spec the run refuses itself)."""
    spec = getattr(cfg, "init", "scratch")
    if not spec or spec == "scratch":
        return None
    from core.weights import parse_weights

    try:
        return parse_weights(spec).net_file(cfg.net)
    except ValueError:
        return None


def check_outputs(cfg: TrainConfig) -> None:
    """Refuse outputs in the committed weights folder without ``--overwrite-shipped``, an output
    folder that is, holds or lies inside the data, and an export file inside the data or the
    output folder's name taken by a file."""
    allowed = getattr(cfg, "overwrite_shipped", False)
    try:
        check_not_shipped(cfg.out, "--out", allowed)
        check_not_shipped(cfg.export, "--export", allowed)
        init = init_file(cfg)
        check_output_apart(cfg.out, {"--data": cfg.data, "--init": init})
        if cfg.export and init is not None and real_path(cfg.export) == real_path(init):
            raise OutputError(f"--export {cfg.export} is the input --init {cfg.init}'s file: it would be replaced; "
                              f"export elsewhere")
        if cfg.export:
            if Path(cfg.export).is_dir():
                raise OutputError(f"--export {cfg.export} is a folder; it names the weights file to write")
            if real_path(cfg.export).is_relative_to(real_path(cfg.data)):
                raise OutputError(f"--export {cfg.export} lies inside the input --data {cfg.data}: write it elsewhere")
    except OutputError as err:
        raise PreflightError(str(err)) from None


def check_writable(cfg: TrainConfig) -> None:
    """Create ``out`` (and the export's folder) and write a probe file in each: a read-only or
    full disk is ``core.atomic``'s one-line ``NotWritableError`` / ``DiskFullError`` now. First
    ``check_outputs``."""
    check_outputs(cfg)
    ensure_writable_folder(cfg.out)
    if cfg.export:
        ensure_writable_folder(Path(cfg.export).parent)


def check_earlier_run(cfg: TrainConfig) -> None:
    """Refuse an ``out`` holding checkpoints unless the run resumes them or starts over."""
    epoch = latest_epoch(cfg.out)
    if epoch is not None and not (cfg.resume or cfg.restart):
        raise PreflightError(f"{cfg.out} holds checkpoints of an earlier run (epoch {epoch}): continue it with "
                             f"RESUME=1 (--resume) or start over with RESTART=1 (--restart)")
    foreign = foreign_files(Path(cfg.out), cfg.net) if epoch is None and not cfg.restart else []
    if foreign:  # a fresh run deletes the files of its names: only its own
        raise PreflightError(f"{cfg.out} holds {', '.join(f.name for f in foreign)}, which no training run wrote "
                             f"there: give another --out, or --restart to delete {'it' if len(foreign) == 1 else 'them'}")


def trains_landmarks(cfg: TrainConfig) -> bool:
    """O-Net always has a landmark head; P-Net and R-Net unless ``--no-landmark-head``."""
    return EXTRA_HEAD_PREFIX[cfg.net] is None or cfg.landmark_head


def has_landmark_list(manifest: dict) -> bool:
    """False only for a build whose manifest says it was made without a landmark list."""
    inputs = (manifest.get("config") or {}).get("inputs")
    return not (isinstance(inputs, dict) and "landmarks" in inputs and inputs["landmarks"] is None)


def needed_kinds(cfg: TrainConfig, manifest: dict) -> list[Kind]:
    """The kinds each of the loss's terms learns from: negatives and positives (classification),
    part faces (box regression), landmark faces (the landmark head)."""
    kinds = [Kind.NEGATIVE, Kind.POSITIVE]
    if cfg.weights.box > 0:
        kinds.append(Kind.PART)
    if cfg.weights.landmark > 0 and trains_landmarks(cfg) and has_landmark_list(manifest):
        kinds.append(Kind.LANDMARK)
    return kinds


def check_kind_ratio(cfg: TrainConfig, manifest: dict) -> None:
    """Refuse a ``--kind-ratio`` without landmark samples when the landmark term would train on this
    build (the other terms' kinds are ``TrainConfig``'s own check)."""
    if Kind.LANDMARK in needed_kinds(cfg, manifest) and not cfg.batch_ratio[Kind.LANDMARK]:
        shares = " ".join(f"{r:g}" for r in cfg.kind_ratio)
        raise PreflightError(f"--kind-ratio {shares} gives no landmark samples, and the {cfg.net} landmark loss "
                             f"(landmark weight {cfg.weights.landmark:g}, --loss-weights) needs them on this build: "
                             "give them a share, or weigh the term 0" +
                             (" or use --no-landmark-head" if EXTRA_HEAD_PREFIX[cfg.net] else ""))


def check_kinds(cfg: TrainConfig, manifest: dict, size: int, train_idx: dict, val_idx: dict) -> None:
    """Refuse a training split without samples of a kind the loss needs, naming the kind and the build."""
    build = Path(manifest["_path"]).parent
    check_kind_ratio(cfg, manifest)
    empty = [k for k in needed_kinds(cfg, manifest) if len(train_idx.get(k, ())) == 0]
    if not empty:
        return
    held_out = [k for k in empty if len(val_idx.get(k, ()))]
    names = " and ".join(KIND_NAMES[k] for k in empty)
    if held_out:
        why = (f"its {' and '.join(f'{len(val_idx[k])} {KIND_NAMES[k]}' for k in held_out)} samples are all held "
               f"out for validation (--val-fraction {cfg.val_fraction}); lower --val-fraction or rebuild it with more")
    else:
        why = "check the build's inputs (its manifest's report) and rebuild it"
    raise PreflightError(f"{build}: no {names} samples of {size} px to train on, and the {cfg.net} loss needs "
                         f"them (a net trained without them is useless): {why}")
