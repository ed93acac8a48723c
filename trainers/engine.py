"""The generic training epoch and validation pass, with their statistics as named running sums.

What a kind of model adds (its loss model, its ``parts.Recipe``: step sums, augmentation, log
columns; its validation's sums) lives in ``trainers.detector_task`` and ``trainers.embed_task``.
``train_one_epoch`` returns the log's ``lr``, the recipe's columns and ``TIMING_COLUMNS``;
``evaluate`` returns a validation pass's sums.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from trainers.distributed import DistInfo
from trainers.parts import Loader, Recipe

TIMING_COLUMNS = ("samples_per_s", "data_wait_share", "epoch_s")


class RunningSums:
    """Named float64 sums in one tensor on the training device: adding costs no host sync, and one
    all-reduce sums them over the processes."""

    def __init__(self, names: tuple[str, ...], device=torch.device("cpu")):
        self.names = names
        self.values = torch.zeros(len(names), dtype=torch.float64, device=device)

    def add(self, **terms) -> None:
        """Add one value (a number or a 0-d tensor) to every sum."""
        if terms.keys() != set(self.names):
            raise KeyError(f"expected {self.names}, got {tuple(terms)}")
        self.values += torch.stack([_float64(terms[n], self.values.device) for n in self.names])

    def all_reduce(self) -> None:
        dist.all_reduce(self.values)

    def totals(self) -> dict[str, float]:
        return dict(zip(self.names, self.values.tolist()))


# -- training ------------------------------------------------------------------------------------
def train_one_epoch(model: nn.Module, loader: Loader, optimizer, scheduler, scaler, cfg, device,
                    dist_info: DistInfo, epoch: int, first_batch: int, recipe: Recipe) -> dict:
    """One pass over the loader's batches with ``model`` a module whose forward takes the batch and
    returns ``(loss, step sums)`` (``detector_task.NetWithLoss``, or DDP of one); ``recipe`` names the
    sums, augments the batch and makes the log's columns."""
    model.train()
    sums = RunningSums(recipe.sums, device)
    bar = tqdm(total=len(loader), desc=f"{recipe.label} {epoch + 1}/{cfg.epochs}", dynamic_ncols=True, leave=False,
               disable=not (cfg.progress and dist_info.main))
    wait = 0.0
    start = time.perf_counter()
    it = iter(loader)
    for step in range(len(loader)):
        t = time.perf_counter()
        batch = next(it)
        wait += time.perf_counter() - t
        # Augment on the device: a GPU mirrors a batch far faster than the host does.
        batch = recipe.prepare(_to_device(batch, device), epoch, first_batch + step, dist_info.rank)
        with _autocast(device, cfg):
            loss, step_sums = model(batch)
        grad_norm = _optimizer_step(loss, model, optimizer, scheduler, scaler, cfg.optim.grad_clip)
        with torch.no_grad():
            sums.add(**step_sums, grad_norm=grad_norm, steps=1.0)
        if step % 10 == 9 or step == len(loader) - 1:
            _check_and_show(sums.totals(), bar, step, epoch, cfg, recipe, optimizer.param_groups[0]["lr"])
    bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    timing = torch.tensor([wait, time.perf_counter() - start], dtype=torch.float64, device=device)
    if dist_info.on:
        sums.all_reduce()
        dist.all_reduce(timing)
        timing /= dist_info.world
    return {"lr": optimizer.param_groups[0]["lr"], **recipe.columns(sums.totals(), *timing.tolist())}


def _optimizer_step(loss: torch.Tensor, model: nn.Module, optimizer, scheduler, scaler,
                    grad_clip: float | None) -> torch.Tensor:
    """Backward, clip, step; returns the global gradient norm before clipping."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), grad_clip or math.inf)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return grad_norm


def _check_and_show(s: dict, bar, step: int, epoch: int, cfg, recipe, lr: float) -> None:
    if not math.isfinite(s["loss"]):
        raise FloatingPointError(f"{recipe.label}: the loss is {s['loss']} in epoch {epoch + 1} by step {step + 1}; "
                                 f"lower --lr (now {cfg.optim.lr}) or set --grad-clip")
    bar.set_postfix(**recipe.postfix(s), lr=f"{lr:.2e}", refresh=False)
    bar.update(step + 1 - bar.n)


# -- validation ----------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[dict], inputs: Callable[[dict], torch.Tensor],
             step_sums: Callable[[object, dict], dict], names: tuple[str, ...], cfg, device) -> dict:
    """One validation pass: ``model(inputs(batch))`` of every batch on the device (under the run's
    mixed precision), ``step_sums(output, batch)`` (in full precision) summed as ``names``."""
    model.eval()
    sums = RunningSums(names, device)
    for batch in batches:
        batch = _to_device(batch, device)
        with _autocast(device, cfg):
            output = model(inputs(batch))
        sums.add(**step_sums(output, batch))
    return sums.totals()


# -- helpers -------------------------------------------------------------------------------------
def _float64(value, device) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().to(device=device, dtype=torch.float64)
    return torch.tensor(value, dtype=torch.float64, device=device)


def _autocast(device: torch.device, cfg):
    if device.type == "cuda" and cfg.amp:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.amp.autocast("cuda", dtype=dtype)
    return nullcontext()


def _to_device(batch: dict, device: torch.device) -> dict:
    if device.type != "cuda":
        return batch
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
