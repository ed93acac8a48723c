"""Fetch the original MTCNN weights from facenet-pytorch's wheel, without installing the package.

    make original-weights          # python -m trainers.original_weights --out weights/original

facenet-pytorch 2.6.0 declares torch<2.3, so it is never a dependency: ``pip download --no-deps``
fetches its wheel into a temporary folder and the three state dicts
``facenet_pytorch/data/{pnet,rnet,onet}.pt`` are copied out of it into ``--out``. With
``--package-dir`` the whole ``facenet_pytorch`` package is also unpacked there, for the detector
benchmark's side-by-side run (``benchmarks.bench_detector --facenet``). ``--wheel`` uses a wheel
file already at hand (no network). Each file is written under a temporary name and renamed, and
every state dict is checked to load with ``weights_only=True`` into this project's nets.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from core.atomic import atomic_write_bytes
from core.stage import run_stage

PACKAGE = "facenet-pytorch==2.6.0"
NETS = ("pnet", "rnet", "onet")


@dataclass(frozen=True)
class OriginalWeightsConfig:
    out: str = "weights/original"
    """Folder for pnet.pt, rnet.pt and onet.pt."""
    wheel: str | None = None
    """A facenet-pytorch wheel already at hand (no network); None: pip download it."""
    package_dir: str | None = None
    """Also unpack the whole facenet_pytorch package into this folder."""


class OriginalWeightsError(RuntimeError):
    pass


def download_wheel(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-d", str(dest), PACKAGE]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("facenet_pytorch-*.whl"))
    if done.returncode != 0 or not wheels:
        raise OriginalWeightsError(f"`{' '.join(cmd)}` failed (network or index not reachable?):\n"
                                   f"{(done.stderr or done.stdout).strip()[-2000:]}")
    return wheels[0]


def extract_weights(wheel: Path, out: Path, package_dir: Path | None = None) -> list[Path]:
    """Copy ``facenet_pytorch/data/<net>.pt`` out of ``wheel`` into ``out``; returns the files."""
    try:
        archive = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as e:
        raise OriginalWeightsError(f"{wheel}: not a readable wheel ({e})") from None
    with archive:
        names = set(archive.namelist())
        missing = [f"facenet_pytorch/data/{n}.pt" for n in NETS if f"facenet_pytorch/data/{n}.pt" not in names]
        if missing:
            raise OriginalWeightsError(f"{wheel}: no {', '.join(missing)} in the wheel")
        written = []
        for net in NETS:
            target = out / f"{net}.pt"
            atomic_write_bytes(target, archive.read(f"facenet_pytorch/data/{net}.pt"))
            written.append(target)
        if package_dir is not None:
            for name in sorted(n for n in names if n.startswith("facenet_pytorch/") and not n.endswith("/")):
                atomic_write_bytes(package_dir / name, archive.read(name))
    return written


def check_weights(files: list[Path]) -> None:
    """Each file loads (``weights_only=True``) into the matching net with no missing or extra keys."""
    import torch

    from core.nets import build_net, load_state

    for path in files:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            load_state(build_net(path.stem, landmark_head=False), path.stem, state)
        except Exception as e:  # noqa: BLE001 - reported with the file name, whatever went wrong
            raise OriginalWeightsError(f"{path}: does not load into {path.stem} ({e})") from None


def main(cfg: OriginalWeightsConfig) -> list[Path]:
    out = Path(cfg.out)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = Path(cfg.wheel) if cfg.wheel else download_wheel(Path(tmp))
        files = extract_weights(wheel, out, Path(cfg.package_dir) if cfg.package_dir else None)
    check_weights(files)
    for f in files:
        print(f"{f} ({f.stat().st_size:,} bytes)")
    return files


if __name__ == "__main__":
    sys.exit(run_stage(OriginalWeightsConfig, main, errors=(OriginalWeightsError,)))
