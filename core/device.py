"""``--device`` text -> ``torch.device``, checked against this machine before any work.

Every stage that takes ``--device`` (detection, mining, training, ROC, the evaluations) resolves it
here, so that ``cuda`` on a machine without a GPU, a GPU index out of range or a misspelling is
one line naming the value and what to use instead, rather than a PyTorch error deep inside the
first forward pass (or, for ``torch.load``, a message advising code changes).
"""

from __future__ import annotations

import torch

# The device types a stage can run on; torch.device also accepts others (meta, xla, ...) that
# no stage supports.
DEVICE_TYPES = ("cpu", "cuda", "mps")


class DeviceError(ValueError):
    """A ``--device`` value this machine cannot run; ``str()`` is one line."""


def _cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(text) -> torch.device:
    """``cpu`` | ``cuda`` | ``cuda:N`` | ``mps`` (or a ``torch.device``) -> that device, available here.

    Returns the device as given (``cuda`` stays without an index, so placement is unchanged);
    raises ``DeviceError`` naming the value when it is malformed or absent on this machine.
    """
    given = str(text).strip() or "''"
    usage = "use cpu, cuda, cuda:N or mps" + (" (an NVIDIA GPU is cuda)" if given.lower().startswith("gpu") else "")
    try:
        device = text if isinstance(text, torch.device) else torch.device(given)
    except (RuntimeError, ValueError, TypeError):
        raise DeviceError(f"--device {given}: not a device name; {usage}") from None
    if device.type not in DEVICE_TYPES:
        raise DeviceError(f"--device {given}: not a device this project runs on; {usage}")
    if device.type == "cuda":
        count = _cuda_count()
        if count == 0:
            raise DeviceError(f"--device {given}: no CUDA device is available on this machine "
                              f"(torch.cuda.is_available() is False); use --device cpu")
        if device.index is not None and device.index >= count:
            raise DeviceError(f"--device {given}: this machine has {count} CUDA device{'s' if count > 1 else ''} "
                              f"(cuda:0{f' .. cuda:{count - 1}' if count > 1 else ''})")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"--device {given}: the Apple GPU (MPS) is not available on this machine "
                          f"(torch.backends.mps.is_available() is False); use --device cpu")
    return device
