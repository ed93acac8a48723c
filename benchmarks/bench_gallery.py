"""Gallery benchmarks, run by ``make bench`` (figures are printed, never asserted).

1. Search (``recognition.gallery.Gallery``): synthetic unit vectors of the shipped embedder's
   dimension (128), 5 per person, at each of ``--sizes`` rows; queries/s of ``search(k=1)`` and of
   ``best_identities(k=2)`` (what identify asks: the best person and the runner-up) in batches of
   20 faces (one group photo) and of 1,000; the gallery's bytes and the process's resident and peak
   memory. Where faiss-cpu is importable, its exact ``IndexFlatIP`` on the same vectors and batches
   (inner products of unit vectors rank as squared distances), for comparison; it is not a
   dependency: numpy's exact search is as fast (docs/benchmarks.md) and a small share of identify's
   time.
2. ``identify`` of one photo of ``--faces`` faces (skimage's LFW faces tiled, 120 px a cell) against
   a gallery of ``--identify-gallery`` rows (random vectors with the shipped embedder's and
   detector's fingerprints): the wall time of ``recognition.identify.main``, models loaded, outputs
   written, and its parts; the cost of each further photo in one run; and ``python -m
   recognition.identify`` as a fresh process (best of three), beside the import alone.

    python -m benchmarks.bench_gallery [--sizes 10000 100000 1000000] [--threads 2] [--faces 20]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

DIM = 128  # the shipped embedder's (core.embednet.EmbedSpec.dim)
PER_PERSON = 5


def rss_mb() -> tuple[float, float]:
    """(resident, peak resident) MB of this process, from /proc/self/status."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields.get("VmRSS", float("nan")), fields.get("VmHWM", float("nan"))


def unit_vectors(n: int, rng, chunk: int = 1 << 16) -> np.ndarray:
    out = np.empty((n, DIM), np.float32)
    for start in range(0, n, chunk):
        v = rng.standard_normal((min(chunk, n - start), DIM), dtype=np.float32)
        out[start : start + len(v)] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def rate(fn, queries: np.ndarray, min_seconds: float = 1.0) -> float:
    """Queries per second of ``fn(queries)``, repeated for at least ``min_seconds`` after one warm-up."""
    fn(queries)
    runs, start = 0, time.perf_counter()
    while True:
        fn(queries)
        runs += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds and runs >= 2:
            return runs * len(queries) / elapsed


def bench_search(sizes, batches, faiss) -> None:
    from recognition.gallery import Gallery

    rng = np.random.default_rng(0)
    for n in sizes:
        vectors = unit_vectors(n, rng)
        gallery = Gallery(vectors, [f"p{i // PER_PERSON:07d}" for i in range(n)])
        rss, _ = rss_mb()
        line = [f"gallery {n:>9,} x {DIM}: {gallery.vectors.nbytes / 2**20:6.1f} MB of vectors, RSS {rss:7.0f} MB"]
        index = None
        if faiss is not None:
            index = faiss.IndexFlatIP(DIM)
            index.add(vectors)
        for batch in batches:
            q = unit_vectors(batch, rng)
            top1 = rate(lambda x: gallery.search(x, k=1), q)
            people = rate(lambda x: gallery.best_identities(x, k=2), q)
            text = f"  batch {batch:>5}: search k=1 {top1:10,.0f} q/s, best 2 people {people:10,.0f} q/s"
            if index is not None:
                text += f"; faiss IndexFlatIP k=1 {rate(lambda x: index.search(x, 1), q):10,.0f} q/s"
            line.append(text)
        _, peak = rss_mb()
        line.append(f"  peak RSS so far {peak:.0f} MB")
        print("\n".join(line), flush=True)
        del gallery, vectors, index


def group_photo(faces: int, seed: int = 0) -> np.ndarray:
    """``faces`` of skimage's 25 px LFW faces, each enlarged to 56 px on a noisy 120 px cell, tiled 5 a row."""
    import cv2
    from skimage.data import lfw_subset

    rng = np.random.default_rng(seed)
    patches = lfw_subset()[:faces]
    rows = -(-faces // 5)
    photo = np.clip(rng.normal(120, 25, (rows * 120, 5 * 120, 3)), 0, 255).astype(np.uint8)
    for k, face in enumerate(patches):
        grey = cv2.resize((face * 255).astype(np.uint8), (56, 56), interpolation=cv2.INTER_CUBIC)
        y, x = (k // 5) * 120 + 32, (k % 5) * 120 + 32
        photo[y : y + 56, x : x + 56] = np.clip(grey[..., None] * np.array([1.0, 0.85, 0.72]), 0, 255).astype(np.uint8)
    return photo


def wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def bench_identify(faces: int, size: int, threads: int, repeats: int = 3) -> None:
    import cv2
    import torch

    from recognition.embedder import embed, load_embedder
    from core.imageio import read_image_rgb
    from detector.align import align_image
    from detector.cascade import load_detector
    from recognition.gallery import Gallery, detector_fingerprint, embedder_fingerprint, load_gallery, save_gallery
    from recognition.identify import IdentifyConfig, main

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        photo_path = Path(tmp) / "in" / "group.jpg"
        photo_path.parent.mkdir()
        cv2.imwrite(str(photo_path), cv2.cvtColor(group_photo(faces), cv2.COLOR_RGB2BGR))
        cfg = IdentifyConfig(images=(str(photo_path),), gallery=str(Path(tmp) / "gallery"), out=str(Path(tmp) / "out"),
                             threads=threads, progress=False)
        embedder = load_embedder(cfg.embedder)
        meta = {"embedder": embedder_fingerprint(embedder),
                "detector": detector_fingerprint(cfg.crops.weights, cfg.align_config(), cfg.flip)}
        rng = np.random.default_rng(1)
        save_gallery(Path(tmp) / "gallery" / "gallery.npz",
                     Gallery(unit_vectors(size, rng), [f"p{i // PER_PERSON:05d}" for i in range(size)],
                             [f"p{i // PER_PERSON:05d}/{i}.jpg" for i in range(size)], ["0" * 64] * size, meta))
        # Each timed run writes into a folder of its own: identify resumes, and an earlier run's answers
        # would be reused rather than measured.
        main(replace(cfg, out=str(Path(tmp) / "warm-up")))  # the first run pays for torch's lazy initialisation
        start = time.perf_counter()
        summary = main(cfg)
        whole = time.perf_counter() - start
        assert summary["reused"] == 0
        # The cost of one more photo in a run (models and gallery loaded once per run): ten photos' run
        # against one photo's, per extra photo.
        many = [photo_path.with_name(f"group{k}.jpg") for k in range(10)]
        for path in many:
            path.write_bytes(photo_path.read_bytes())
        start = time.perf_counter()
        main(replace(cfg, images=tuple(map(str, many)), out=str(Path(tmp) / "out10")))
        per_photo = (time.perf_counter() - start - whole) / (len(many) - 1)
        # What `make identify` on the one photo costs: a fresh process, whose import of torch is most of it.
        command = [sys.executable, "-m", "recognition.identify", "--images", str(photo_path), "--gallery", cfg.gallery,
                   "--threads", str(threads), "--no-progress", "--out"]
        process = min(wall([*command, str(Path(tmp) / f"out-cli-{k}")]) for k in range(repeats))
        imports = min(wall([sys.executable, "-c", "import recognition.identify"]) for _ in range(repeats))
        # Its parts, on models already loaded.
        detector, gallery = load_detector(cfg.crops.weights, cfg.crops.detector), load_gallery(cfg.gallery)
        t0 = time.perf_counter()
        gallery = load_gallery(cfg.gallery)
        t1 = time.perf_counter()
        image = read_image_rgb(photo_path)
        dets = detector.detect(image)
        t2 = time.perf_counter()
        crops = align_image(image, dets, cfg.align_config())
        vectors = embed(embedder, list(crops.values()), flip=cfg.flip)
        t3 = time.perf_counter()
        gallery.best_identities(vectors, k=2)
        t4 = time.perf_counter()
    print(f"identify: a {image.shape[1]}x{image.shape[0]} photo of {faces} faces ({summary['faces']} found) against "
          f"{size:,} gallery faces, {threads} threads: {whole:.2f} s for recognition.identify.main (models and gallery "
          f"loaded, outputs written), {per_photo:.2f} s for each further photo of a run; parts: gallery load "
          f"{t1 - t0:.3f} s, detect {t2 - t1:.3f} s, align + embed (mirror added) {t3 - t2:.3f} s, search "
          f"{1000 * (t4 - t3):.1f} ms")
    print(f"identify as a command (python -m recognition.identify, one photo, best of {repeats}): {process:.2f} s, "
          f"of which {imports:.2f} s is starting Python and importing the stage (torch)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--batches", type=int, nargs="+", default=[20, 1000])
    parser.add_argument("--threads", type=int, default=2, help="BLAS, torch and faiss threads")
    parser.add_argument("--faces", type=int, default=20)
    parser.add_argument("--identify-gallery", type=int, default=10_000)
    parser.add_argument("--no-faiss", action="store_true", help="skip the faiss comparison")
    args = parser.parse_args()
    try:
        from threadpoolctl import threadpool_limits  # numpy's BLAS threads; installed with scikit-image's deps
    except ImportError:
        from contextlib import nullcontext as threadpool_limits
    try:
        import faiss
    except ImportError:
        faiss = None
    if args.no_faiss:
        faiss = None
    if faiss is not None:
        faiss.omp_set_num_threads(args.threads)
    print(f"gallery search: numpy {np.__version__} float32 matrix product, {args.threads} threads"
          f"{f'; faiss {faiss.__version__}' if faiss is not None else '; faiss-cpu not installed (no comparison)'}")
    with threadpool_limits(args.threads):
        bench_search(args.sizes, args.batches, faiss)
        bench_identify(args.faces, args.identify_gallery, args.threads)


if __name__ == "__main__":
    main()
