"""The output-folder lock: a second run is refused with the holder's pid; a killed holder's lock is taken over."""

import signal
import subprocess
import sys
import time

import pytest

from core.lock import FolderLockedError, folder_lock

HOLD = """
import sys, time
from core.lock import folder_lock
with folder_lock(sys.argv[1], "test holder"):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_second_lock_in_the_same_folder_is_refused_and_released_after(tmp_path):
    with folder_lock(tmp_path / "out", "first"):
        with pytest.raises(FolderLockedError, match=r"in use by pid \d+ \(first"):
            with folder_lock(tmp_path / "out", "second"):
                pass
    with folder_lock(tmp_path / "out", "third"):  # free again
        pass


def test_a_live_holder_is_named_and_a_killed_one_is_taken_over(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(FolderLockedError) as err:
            with folder_lock(tmp_path, "rerun"):
                pass
        assert f"pid {holder.pid} (test holder" in str(err.value) and "\n" not in str(err.value)
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        deadline = time.monotonic() + 5
        with folder_lock(tmp_path, "after kill -9"):
            assert time.monotonic() < deadline
    finally:
        holder.kill()
        holder.wait()


def test_a_forked_child_does_not_keep_the_lock(tmp_path):
    import os

    ready_r, ready_w = os.pipe()
    with folder_lock(tmp_path, "parent"):
        pid = os.fork()
        if pid == 0:  # the child lingers past the parent's run, as a DataLoader worker can
            os.write(ready_w, b"1")
            time.sleep(3)
            os._exit(0)
        os.read(ready_r, 1)  # the child runs (the fork handlers are done)
    try:
        with folder_lock(tmp_path, "next run"):  # refused if the child had inherited the lock
            pass
    finally:
        os.waitpid(pid, 0)
        os.close(ready_r)
        os.close(ready_w)
