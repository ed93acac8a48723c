"""Data-stage benchmarks, run by ``make bench`` (figures are printed, never asserted).

1. ``prepare.generate`` (pnet-data, 12 px) over a WIDER-format set: wall time, images/s,
   samples/s and peak resident memory of the whole process tree (sampled from /proc).
2. The same at full WIDER scale: a WIDER-format tree that lists the given images ``--repeat``
   times under new names (symlinks), 12,870 images for the shared 1,430; time should grow
   linearly and memory stay flat.
3. LMDB read throughput into batched tensors: 12 px samples through the kind-mixing sampler
   and a DataLoader with one worker.
4. Shard checksum verification (``lmdb_builders.verify``): what opening a build costs the first
   time (every shard's records hashed and compared with the manifest) and once ``verified.json``
   remembers its shards; for the builds above and any given with ``--verify-builds`` (``make
   bench`` passes ``$(OUT)/pnet`` when it exists, so a full-scale build is measured too; those are
   only read, no cache is written into them).

    python -m benchmarks.bench_data --wider ../shared/data/wider --landmarks ../shared/data/landmarks/trainImageList.txt
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from core.stage import run_stage
from lmdb_builders.manifest import load_manifest


@dataclass(frozen=True)
class BenchConfig:
    wider: str
    """WIDER root with wider_face_split/ and WIDER_train/."""
    landmarks: str | None = None
    """A landmark list for the landmark samples too (CNN_FacePoint .txt or a CelebA folder)."""
    workers: int = 0
    """Worker processes of the data stage (0: as many as CPUs)."""
    repeat: int = 9
    """The full-scale run lists every WIDER image this many times."""
    read_batches: int = 400
    """Batches read in the LMDB read benchmark."""
    batch_size: int = 384
    """Samples per batch in the LMDB read benchmark."""
    work_dir: str | None = None
    """Folder for the builds (a new temporary folder when none)."""
    skip_full_scale: bool = False
    """Skip the full-scale run."""
    verify_builds: tuple[str, ...] = ()
    """Existing builds whose checksum verification to time as well (read only)."""


def tree_rss_bytes(root_pid: int) -> int:
    """Resident memory of a process and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        pid = int(entry)
        children.setdefault(int(fields.get("PPid", "0").strip()), []).append(pid)
        rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def run_measured(cmd: list[str]) -> tuple[float, int]:
    """Run a command; return (wall seconds, peak RSS in bytes of its process tree)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    done = threading.Event()

    def watch():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss_bytes(proc.pid))
            done.wait(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    _, err = proc.communicate()
    done.set()
    watcher.join()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{err[-2000:]}")
    return time.perf_counter() - t0, peak


def repeated_wider_tree(wider: Path, out: Path, repeat: int) -> Path:
    """A WIDER-format tree whose txt lists every image ``repeat`` times (symlinked copies)."""
    txt = wider / "wider_face_split" / "wider_face_train_bbx_gt.txt"
    lines = txt.read_text().splitlines()
    images = out / "WIDER_train" / "images"
    out_txt = out / "wider_face_split" / "wider_face_train_bbx_gt.txt"
    out_txt.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for r in range(repeat):
        for line in lines:
            if line.strip().lower().endswith(".jpg"):
                rel = Path(line.strip())
                new_rel = rel.with_name(f"{rel.stem}_r{r}{rel.suffix}")
                link = images / new_rel
                link.parent.mkdir(parents=True, exist_ok=True)
                if not link.exists():
                    link.symlink_to((wider / "WIDER_train" / "images" / rel).resolve())
                written.append(str(new_rel))
            else:
                written.append(line)
    out_txt.write_text("\n".join(written) + "\n")
    return out


def bench_generate(wider: Path, landmarks: str | None, out: Path, workers: int) -> dict:
    cmd = [sys.executable, "-m", "prepare.generate",
           "--wider-txt", str(wider / "wider_face_split" / "wider_face_train_bbx_gt.txt"),
           "--wider-images", str(wider / "WIDER_train" / "images"), "--out", str(out),
           "--net-size", "12", "--workers", str(workers)]
    if landmarks:
        cmd += ["--landmarks", landmarks]
    seconds, peak = run_measured(cmd)
    manifest = load_manifest(out)
    images = manifest["report"]["wider_images"] + manifest["report"]["landmark_images"]
    samples = sum(b["samples"] for b in manifest["buckets"].values())
    return {"seconds": seconds, "peak_rss_mb": peak / 2**20, "wider_images": manifest["report"]["wider_images"],
            "images_per_s": images / seconds, "samples": samples, "samples_per_s": samples / seconds}


def bench_read(build: Path, batches: int, batch_size: int) -> dict:
    import torch

    from lmdb_builders.reader import MixedKindBatchSampler, ShardDataset, ShardLoader, split_by_kind

    ds = ShardDataset(build, 12)
    train, _ = split_by_kind(ds.kinds, 0.0, seed=0)
    sampler = MixedKindBatchSampler(train, batch_size, seed=0, batches_per_epoch=batches)
    loader = ShardLoader(ds, sampler, num_workers=1, prefetch_factor=4)
    n = 0
    it = iter(loader)
    first = next(it)  # worker start-up is not throughput
    t0 = time.perf_counter()
    for batch in it:
        n += batch["image"].shape[0]
        assert batch["image"].dtype == torch.uint8
    seconds = time.perf_counter() - t0
    return {"samples": n, "seconds": seconds, "samples_per_s": n / seconds, "batch_size": first["image"].shape[0]}


def bench_verify(build: Path, size: int = 12) -> dict:
    """Opening a build: ``ShardDataset`` with every shard verified, then again with ``verified.json``."""
    from lmdb_builders.reader import ShardDataset
    from lmdb_builders.verify import VERIFIED_NAME

    (build / VERIFIED_NAME).unlink(missing_ok=True)
    t0 = time.perf_counter()
    ds = ShardDataset(build, size)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    ShardDataset(build, size)
    cached = time.perf_counter() - t0
    mb = sum(p.stat().st_size for p in ds.paths) / 1e6
    return {"samples": len(ds), "shard_mb": mb, "verify_ms": 1000 * first, "mb_per_s": mb / first,
            "cached_open_ms": 1000 * cached}


def bench_verify_read_only(build: Path) -> dict:
    """Every shard of an existing build verified without touching its folder (no cache written)."""
    from lmdb_builders.verify import verified_kinds

    manifest = load_manifest(build)
    t0 = time.perf_counter()
    samples = sum(len(verified_kinds(build / s["path"], s["path"], s["sha256"], None, "")) for s in manifest["shards"])
    seconds = time.perf_counter() - t0
    mb = sum((build / s["path"]).stat().st_size for s in manifest["shards"]) / 1e6
    return {"samples": samples, "shard_mb": mb, "verify_ms": 1000 * seconds, "mb_per_s": mb / seconds}


def show(title: str, figures: dict) -> None:
    body = ", ".join(f"{k} {v:,.1f}" if isinstance(v, float) else f"{k} {v:,}" for k, v in figures.items())
    print(f"{title}: {body}", flush=True)


def main(cfg: BenchConfig) -> dict:
    wider = Path(cfg.wider)
    work = Path(cfg.work_dir or tempfile.mkdtemp(prefix="mtcnn-bench-"))
    results = {}
    results["pnet_data"] = bench_generate(wider, cfg.landmarks, work / "pnet", cfg.workers)
    show(f"pnet-data on {wider}", results["pnet_data"])
    results["read"] = bench_read(work / "pnet", cfg.read_batches, cfg.batch_size)
    show("LMDB read, 12 px, sampler + ShardLoader(num_workers=1) into tensors", results["read"])
    results["verify"] = bench_verify(work / "pnet")
    show("shard checksums, opening the build (verified, then remembered)", results["verify"])
    if not cfg.skip_full_scale and cfg.repeat > 1:
        tree = repeated_wider_tree(wider, work / "wider_x", cfg.repeat)
        results["full_scale"] = bench_generate(tree, cfg.landmarks, work / "pnet_x", cfg.workers)
        show(f"pnet-data at {cfg.repeat}x ({results['full_scale']['wider_images']:,} WIDER images)", results["full_scale"])
        ratio = results["full_scale"]["seconds"] / results["pnet_data"]["seconds"]
        print(f"time ratio full/small {ratio:.2f} for {cfg.repeat}x the WIDER images (landmark images are not repeated)")
        results["verify_full_scale"] = bench_verify(work / "pnet_x")
        show(f"shard checksums at {cfg.repeat}x (verified, then remembered)", results["verify_full_scale"])
    for build in cfg.verify_builds:
        results[f"verify {build}"] = bench_verify_read_only(Path(build))
        show(f"shard checksums of {build} (verified, read only)", results[f"verify {build}"])
    print(f"(work folder {work})")
    return results


if __name__ == "__main__":
    sys.exit(run_stage(BenchConfig, main))
