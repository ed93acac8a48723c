"""Shared pytest fixtures: a tiny synthetic WIDER set, the real shared data, and no network.

Used by every test file (``pytest`` loads it by itself). ``tiny_wider`` writes a handful of images
into pytest's session temp folder; nothing is written into the project.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
from pathlib import Path

import pytest

from child_env import REPO

SHARED_DATA = REPO.parent / "shared" / "data"

# The tiny fixture's shape; tests/test_annotations.py checks exact counts for exactly this.
TINY_TRAIN_IMAGES = 5
TINY_VAL_IMAGES = 2
TINY_LANDMARK_FACES = 8
TINY_SEED = 0


@pytest.fixture
def make_dry_run():
    """``make -n ARGS`` in the repo: the commands it would run, continuation lines joined. The data
    inputs (WIDER list, landmark list) are named t.txt and l.txt and taken as present (``-o``), so
    that a dry run needs no ../shared. An ``OUT`` in the environment (make reads it as the output
    folder) is left out, so that the Makefile's default shows. The recipes' last lines, which record
    each target's input digests (``core/make_inputs.py write``), are left out too: the stage's own
    command stays the last line."""
    env = {k: v for k, v in os.environ.items() if k != "OUT"}

    def run(*args: str) -> str:
        done = subprocess.run(["make", "-C", str(REPO), "-n", "--no-print-directory", "VENV_STAMP=", "PY=python",
                               "WIDER_TXT=t.txt", "LANDMARKS=l.txt", "-o", "t.txt", "-o", "l.txt", *args],
                              capture_output=True, text=True, check=True, env=env)
        lines = done.stdout.replace("\\\n", " ").splitlines()
        return "".join(line + "\n" for line in lines if "core/make_inputs.py write" not in line)

    return run


@pytest.fixture(scope="session")
def tiny_wider(tmp_path_factory):
    """``demo.data.DemoPaths`` of a small WIDER-layout set with every edge case the parsers handle
    (read-only: it is shared by the whole session).

    Train image 0 holds a face flagged invalid, a face hanging off the left border and a zero-width
    box; the last train image has no faces (with the official zeros line).
    """
    # Imported here, not at the top, so that a broken demo builder fails only the tests using it.
    from demo.data import DemoConfig, build_demo_dataset

    root = tmp_path_factory.mktemp("tiny_wider")
    return build_demo_dataset(
        DemoConfig(
            out_dir=root,
            num_train_images=TINY_TRAIN_IMAGES,
            num_val_images=TINY_VAL_IMAGES,
            num_landmark_faces=TINY_LANDMARK_FACES,
            seed=TINY_SEED,
            with_edge_cases=True,
        )
    )


@pytest.fixture
def one_torch_thread():
    """torch on one thread for a test, restored after it (the nets are small and the machine is shared;
    a run may change the thread count, so each test starts from one)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only real data (``../shared/data`` beside the project); skips the test when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_local(sock: socket.socket, address) -> bool:
    if sock.family == getattr(socket, "AF_UNIX", None):
        return True
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, bytes):
        host = host.decode()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:  # a host name other than localhost would need DNS, i.e. the network
        return False


def _guarded_connect(sock, address, *args, **kwargs):
    if not _is_local(sock, address):
        raise RuntimeError(f"tests must not use the network: connect to {address!r} refused")
    return _real_connect(sock, address, *args, **kwargs)


def _guarded_connect_ex(sock, address, *args, **kwargs):
    if not _is_local(sock, address):
        raise RuntimeError(f"tests must not use the network: connect_ex to {address!r} refused")
    return _real_connect_ex(sock, address, *args, **kwargs)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every test runs with outgoing connections refused, loopback and Unix sockets excepted."""
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded_connect_ex)


@pytest.fixture
def wider_set(tmp_path):
    """Two 64x80 WIDER val images with one face each, and their ground truth: what ``make eval-wider``
    reads, as (images folder, ground-truth folder)."""
    import cv2
    import numpy as np

    from annotations.wider_mat import GtImage, write_ground_truth
    from evaluation.wider_eval import SETTINGS

    gt = write_ground_truth(tmp_path / "gt", [
        GtImage("0--Parade", name, np.array([[10.0, 10.0, 30.0, 30.0]]), {s: np.array([0]) for s in SETTINGS})
        for name in ("0_a", "0_b")])
    images = tmp_path / "images"
    (images / "0--Parade").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("0_a", "0_b"):
        cv2.imwrite(str(images / "0--Parade" / f"{name}.jpg"), rng.integers(0, 255, (64, 80, 3), dtype=np.uint8))
    return images, gt
