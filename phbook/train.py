"""The one training loop of the book, used by every model family.

A model plugs in through a small protocol (all but the first are optional):

``model.loss(batch) -> dict[str, Tensor]``
    Named loss terms of a mini-batch; the key ``"loss"`` is the one minimised. The other
    terms (a reconstruction error, a KL divergence) are logged. Instead of a method, a
    function ``loss_fn(model, batch)`` can be passed to :func:`fit`.
``model.configure_optimizers(lr, weight_decay) -> dict[str, Optimizer]``
    For models with several optimisers (a GAN's generator and critic). Default: one Adam
    over all parameters.
``model.training_step(batch, optimizers, state) -> dict[str, Tensor]``
    For models whose update is more than "backward the loss, step the optimiser" (a GAN
    with several critic steps per generator step). Returns detached loss terms.
``model.on_epoch_start(state)``
    Called before every epoch, e.g. to anneal the KL weight of a VAE.
``model.hparams``
    A dict of constructor arguments. They join the checkpoint's fingerprint, so that a
    checkpoint of the same architecture with another ``beta`` is not reused.
``model.validation_loss(batch) -> dict[str, Tensor]``
    Loss terms on held-out data; defaults to ``model.loss``.
``model.schedule_epochs``
    How many epochs at the start of training change the loss's own weights (a VAE's KL
    warm-up: ``kl_warmup``). See "Best epoch" below.

Best epoch. With validation data, :func:`fit` restores the weights of the epoch with
the lowest validation loss (``restore_best``) and stops early on it (``patience``).
Losses whose weights change during training cannot be compared across epochs: during a
KL warm-up the epoch with the KL weight 0 has the lowest loss, and it is the
unpenalised network, not the model asked for. So the best epoch is chosen only among
epochs trained on the full objective: never inside the model's declared schedule
(``schedule_epochs``, or ``fit(schedule_epochs=...)``), and, for any model that logs
its loss weights as terms named ``*_weight`` (the VAE's ``kl_weight``), only among
epochs whose weights equal the last epoch's. Where no epoch qualifies (training ends
inside the schedule) the final weights are kept. The chosen epoch is
``history.attrs["best_epoch"]`` (``None``: the final weights).

Training runs on :func:`phbook.config.threads` CPU threads (1 unless ``PHBOOK_THREADS``
or ``phbook.setup(threads=...)`` says otherwise) when nothing chose them before.

Data stay on the device as tensors and are sliced by a random permutation each epoch,
which is faster than a ``DataLoader`` for images that fit in memory. Every epoch ends
with a checkpoint written atomically (a temporary file renamed), from which an
interrupted run resumes with the same final weights as an uninterrupted one.

The same loop trains on several GPUs (or CPU processes) with PyTorch's
``DistributedDataParallel`` when it runs in every process of a ``torchrun`` launch
(``distributed=True``, see :func:`fit` and :mod:`phbook.train_ddp`).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from . import config
from .train_ddp import ddp_device

CHECKPOINT_FORMAT = "phbook-checkpoint-1"

__all__ = [
    "TrainState",
    "NonFiniteLossError",
    "fit",
    "load_or_train",
    "load_checkpoint",
    "checkpoint_path",
]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the epoch and step."""


@dataclass
class TrainState:
    """Where training is: passed to ``training_step`` and ``on_epoch_start``."""

    epoch: int  # current epoch, counted from 0
    epochs: int  # total epochs asked for
    step: int  # global optimisation step, counted from 0
    steps_per_epoch: int

    @property
    def progress(self) -> float:
        """Fraction of the whole training done, from 0 to 1."""
        total = max(1, self.epochs * self.steps_per_epoch)
        return min(1.0, self.step / total)


# ----------------------------------------------------------------------------- data


def _as_tensors(x) -> tuple[torch.Tensor, ...]:
    items = x if isinstance(x, (tuple, list)) else (x,)
    out = []
    for item in items:
        t = torch.as_tensor(item)
        if t.dtype == torch.float64:
            t = t.float()
        out.append(t)
    n = len(out[0])
    if any(len(t) != n for t in out):
        raise ValueError(
            "all arrays passed as training data must have the same length, got "
            + ", ".join(str(len(t)) for t in out)
        )
    if n == 0:
        raise ValueError("the training data is empty")
    for t in out:
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ValueError(
                f"the training data hold {int((~torch.isfinite(t)).sum())} NaN or "
                "infinite values: drop or repair those samples"
            )
    return tuple(out)


def _batch(tensors: tuple[torch.Tensor, ...], idx, dev) -> Any:
    parts = tuple(t[idx].to(dev, non_blocking=True) for t in tensors)
    return parts[0] if len(parts) == 1 else parts


def _checksum(tensors: tuple[torch.Tensor, ...]) -> str:
    """A cheap fingerprint of the data: shape, dtype and a strided subsample's sums."""
    parts = []
    for t in tensors:
        flat = t.reshape(-1)
        step = max(1, flat.numel() // 100_000)
        sample = flat[::step].double()
        parts.append(
            f"{tuple(t.shape)}:{t.dtype}:{float(sample.sum()):.6e}:"
            f"{float((sample * sample).sum()):.6e}"
        )
    return "|".join(parts)


def _order_checksum(tensors: tuple[torch.Tensor, ...]) -> str:
    """What :func:`_checksum` misses: the same values in another place (frames in
    another order, images flipped or their rows swapped), from a subsample of every
    frame weighted by position."""
    parts = []
    for t in tensors:
        rows = t.reshape(len(t), -1) if t.ndim > 1 else t.reshape(-1, 1)
        step_n = max(1, len(rows) // 1000)
        step_p = max(1, rows.shape[1] // 256)
        sample = rows[::step_n, ::step_p].double()
        w_n = torch.arange(1, len(sample) + 1, dtype=torch.float64)[:, None]
        w_p = torch.arange(1, sample.shape[1] + 1, dtype=torch.float64)[None, :]
        parts.append(f"{float((sample * w_n).sum()):.6e}:{float((sample * w_p).sum()):.6e}")
    return "|".join(parts)


#: Fingerprint keys added after checkpoints were first written: a checkpoint that
#: lacks one is matched on the keys it has (it was made before the key existed).
_LATER_KEYS = frozenset({"data_order"})


def _model_signature(model: nn.Module) -> str:
    shapes = ",".join(f"{k}{tuple(v.shape)}" for k, v in model.state_dict().items())
    # hyperparameters that change no shape (a VAE's beta, a penalty weight) still
    # change the model: a model that lists them in ``hparams`` makes them count
    hparams = getattr(model, "hparams", None)
    extra = repr(sorted(hparams.items())) if isinstance(hparams, dict) else ""
    return f"{type(model).__module__}.{type(model).__qualname__}[{shapes}]{extra}"


# ----------------------------------------------------------------------- checkpoints


def checkpoint_path(name: str, directory: str | os.PathLike | None = None) -> Path:
    """Where :func:`load_or_train` keeps the model called ``name``."""
    if not name or any(sep in name for sep in ("/", "\\")) or name.startswith("."):
        raise ValueError(f"checkpoint name {name!r} must be a plain file name")
    base = Path(directory) if directory is not None else config.checkpoint_dir()
    base.mkdir(parents=True, exist_ok=True)
    return base / f"{name}.pt"


def _atomic_save(obj: dict, path: Path) -> None:
    # one temporary file per process: two notebooks training the same model at once
    # (chapters that share a checkpoint, run in parallel by the tests) never rename
    # each other's half-written file
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read a checkpoint written by :func:`fit` (tensors and plain values only)."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - the message must name the file
        raise ValueError(f"{path}: not a readable phbook checkpoint ({exc})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a phbook checkpoint (format {CHECKPOINT_FORMAT})")
    return ckpt


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


# ---------------------------------------------------------------------- optimisation


def _default_optimizers(model: nn.Module, lr: float, weight_decay: float) -> dict:
    if hasattr(model, "configure_optimizers"):
        opts = model.configure_optimizers(lr, weight_decay)
        if isinstance(opts, torch.optim.Optimizer):
            opts = {"opt": opts}
        return dict(opts)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(model).__name__} has no trainable parameters")
    return {"opt": torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)}


def _loss_terms(model, batch, loss_fn, validation=False) -> dict[str, torch.Tensor]:
    if loss_fn is not None:
        out = loss_fn(model, batch)
    elif validation and hasattr(model, "validation_loss"):
        out = model.validation_loss(batch)
    elif hasattr(model, "loss"):
        out = model.loss(batch)
    else:
        raise TypeError(
            f"{type(model).__name__} has no loss(batch) method; pass loss_fn=..."
        )
    if isinstance(out, torch.Tensor):
        out = {"loss": out}
    if "loss" not in out:
        raise ValueError(f"the loss terms {sorted(out)} have no 'loss' entry to minimise")
    return out


def _default_step(model, batch, optimizers, loss_fn, grad_clip, ddp_module=None):
    if ddp_module is not None:  # through DDP's forward, so that gradients are averaged
        terms = ddp_module(batch)
    else:
        terms = _loss_terms(model, batch, loss_fn)
    for opt in optimizers.values():
        opt.zero_grad(set_to_none=True)
    terms["loss"].backward()
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    for opt in optimizers.values():
        opt.step()
    return {k: v.detach() for k, v in terms.items()}


def _check_finite(buffer: list, first_step: int, epoch: int, steps_per_epoch: int):
    """Raise NonFiniteLossError naming the first bad step in ``buffer``."""
    if not buffer:
        return
    values = torch.stack([b["loss"].float().reshape(()) for b in buffer])
    finite = torch.isfinite(values)
    if bool(finite.all()):
        return
    bad = int((~finite).nonzero()[0, 0])
    step = first_step + bad
    terms = ", ".join(f"{k}={float(v):.4g}" for k, v in buffer[bad].items())
    raise NonFiniteLossError(
        f"the loss became {float(values[bad])} at epoch {epoch + 1}, step "
        f"{step - epoch * steps_per_epoch + 1} of {steps_per_epoch} (global step "
        f"{step + 1}); loss terms: {terms}. Lower the learning rate, check the input "
        "normalisation, or clip gradients (grad_clip=...)."
    )


# ------------------------------------------------------------------------ distributed


class _LossModule(nn.Module):
    """Calls the model's loss in ``forward``: DistributedDataParallel averages the
    gradients of what goes through ``forward`` only, and the models of the book give
    their loss through ``loss(batch)`` (or ``loss_fn``) rather than ``forward``."""

    def __init__(self, model: nn.Module, loss_fn: Callable | None):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch):
        return _loss_terms(self.model, batch, self.loss_fn)


class _GradientAveraging:
    """An optimiser whose ``step`` first averages its gradients over the processes.

    For models with their own ``training_step`` (several optimisers, several backward
    passes per step), which DistributedDataParallel's single forward cannot wrap: the
    update is the same as DDP's, the average of the processes' gradients.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, world_size: int):
        self.optimizer = optimizer
        self.world_size = world_size

    def step(self, *args, **kwargs):
        import torch.distributed as dist

        for group in self.optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= self.world_size
        return self.optimizer.step(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.optimizer, name)


def _distributed_setup(distributed: bool | None) -> tuple[bool, int, int]:
    """(on, rank, world size) of the run; checks that a process group exists."""
    import torch.distributed as dist

    ready = dist.is_available() and dist.is_initialized()
    if distributed is None:
        distributed = ready and dist.get_world_size() > 1
    if not distributed:
        return False, 0, 1
    if not ready:
        raise ValueError(
            "distributed=True needs an initialised torch.distributed process group: "
            "launch with torchrun and call phbook.train_ddp.init_ddp() first"
        )
    return True, dist.get_rank(), dist.get_world_size()


def _all_mean(values: torch.Tensor, world: int) -> torch.Tensor:
    """The mean over the processes of ``values`` (moved to where the backend
    communicates: the GPU for NCCL, the CPU otherwise)."""
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        values = values.to(torch.device("cuda", torch.cuda.current_device()))
    else:
        values = values.cpu()
    values = values.clone()
    dist.all_reduce(values)
    return values / world


def _sync_losses(buffer: list, world: int) -> None:
    """Replace each step's loss by its mean over the processes (NaN anywhere stays
    NaN), so that every process sees, and stops at, the same non-finite loss."""
    if not buffer:
        return
    losses = [b["loss"].float().reshape(()).cpu() for b in buffer]
    mean = _all_mean(torch.stack(losses), world)
    for b, v in zip(buffer, mean, strict=True):
        b["loss"] = v


@torch.no_grad()
def _evaluate(model, tensors, dev, batch_size, loss_fn) -> dict[str, float]:
    was_training = model.training
    model.eval()
    n = len(tensors[0])
    sums: dict[str, torch.Tensor] = {}
    for start in range(0, n, batch_size):
        idx = torch.arange(start, min(n, start + batch_size))
        terms = _loss_terms(model, _batch(tensors, idx, dev), loss_fn, validation=True)
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + v.detach().float() * len(idx)
    model.train(was_training)
    return {k: float(v) / n for k, v in sums.items()}


# ------------------------------------------------------------------------------- fit


def fit(
    model: nn.Module,
    x,
    *,
    x_val=None,
    epochs: int = 10,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    loss_fn: Callable | None = None,
    patience: int | None = None,
    min_delta: float = 0.0,
    restore_best: bool | None = None,
    grad_clip: float | None = None,
    checkpoint: str | os.PathLike | None = None,
    seed: int = 0,
    device=None,
    data_on_device: bool = True,
    progress: bool | None = None,
    callbacks: Sequence[Callable] = (),
    meta: dict | None = None,
    distributed: bool | None = None,
    schedule_epochs: int | None = None,
) -> pd.DataFrame:
    """Train ``model`` on ``x`` and return the loss history, one row per epoch.

    Parameters
    ----------
    x, x_val
        Training (and validation) data: an array or tensor whose first axis indexes
        samples, or a tuple of them (e.g. images and conditions).
    patience
        Stop when the validation loss has not improved by ``min_delta`` for this many
        epochs (needs ``x_val``). The best weights are restored at the end
        (``restore_best``, on by default when ``x_val`` is given).
    checkpoint
        A file written after every epoch. If it exists, training resumes from it; if it
        holds a finished training, the model is loaded and no training is done.
    seed
        Seeds the batch order and torch's generator, so a run can be repeated exactly.
    callbacks
        Functions ``f(state, row)`` called after each epoch's checkpoint is written.
    meta
        Plain values stored in the checkpoint (e.g. the model's constructor arguments).
    distributed
        Train with ``DistributedDataParallel`` over the processes of an initialised
        ``torch.distributed`` group (every process of a ``torchrun`` launch calls
        ``fit`` with the same arguments; see :func:`phbook.train_ddp.init_ddp`).
        Default: on when such a group of more than one process exists. Each step still
        takes ``batch_size`` frames in all: every process draws the same permutation
        and takes every ``world_size``-th frame of each batch, so ``batch_size`` must be
        a multiple of the number of processes, and the result equals a one-process run
        up to rounding (for models without randomness or batch statistics). Gradients
        are averaged by DDP, logged losses are averaged over the processes, and only
        rank 0 writes the checkpoint and shows progress. The default device is the
        process's own GPU (``cuda:LOCAL_RANK``) when there are GPUs.
    schedule_epochs
        Epochs at the start whose loss weights differ from the final objective (default:
        ``model.schedule_epochs``, else 0). They are never restored as the best epoch
        and do not count towards ``patience`` (see the module's "Best epoch").
    """
    if int(epochs) != epochs or epochs < 1:
        raise ValueError(f"epochs must be a whole number of at least 1, got {epochs!r}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(
            f"batch_size must be a whole number of at least 1, got {batch_size!r}"
        )
    epochs, batch_size = int(epochs), int(batch_size)
    if patience is not None and x_val is None:
        raise ValueError("early stopping (patience=...) needs validation data (x_val=...)")
    ddp, rank, world = _distributed_setup(distributed)
    if ddp and batch_size % world:
        raise ValueError(
            f"batch_size={batch_size} must be a multiple of the {world} processes"
        )
    if device is not None:
        dev = torch.device(device)
    elif ddp:
        dev = ddp_device()
    else:
        dev = config.device()
    show = (config.show_progress() if progress is None else progress) and rank == 0
    if not config.threads_chosen():  # e.g. the ``phbook train`` command, a script
        config.use_threads()
    restore_best = (x_val is not None) if restore_best is None else restore_best
    if schedule_epochs is None:
        schedule_epochs = int(getattr(model, "schedule_epochs", 0) or 0)
    if schedule_epochs < 0:
        raise ValueError(f"schedule_epochs must be >= 0, got {schedule_epochs}")

    tensors = _as_tensors(x)
    val_tensors = _as_tensors(x_val) if x_val is not None else None
    fingerprint = {
        "model": _model_signature(model),
        "data": _checksum(tensors),
        "batch_size": str(batch_size),
        "lr": repr(lr),
        "seed": str(seed),
        "data_order": _order_checksum(tensors),
    }
    if weight_decay:  # absent at 0, so that checkpoints made without it still match
        fingerprint["weight_decay"] = repr(weight_decay)
    path = Path(checkpoint) if checkpoint is not None else None

    model.to(dev)
    optimizers = _default_optimizers(model, lr, weight_decay)
    history: dict[str, list] = {}
    best = _no_best()
    start_epoch = 0
    finished = False

    torch.manual_seed(seed + rank)  # model noise differs between processes
    perm_gen = torch.Generator().manual_seed(seed)  # the batch order does not

    if path is not None and path.exists():
        ckpt = load_checkpoint(path, map_location=dev)
        old = ckpt["fingerprint"]
        mine = {k: v for k, v in fingerprint.items() if k in old or k not in _LATER_KEYS}
        if old != mine:
            changed = sorted(k for k in {*old, *mine} if old.get(k) != mine.get(k))
            warnings.warn(
                f"{path}: the checkpoint was made with a different {', '.join(changed)}; "
                "training from scratch and overwriting it",
                stacklevel=2,
            )
        else:
            model.load_state_dict(ckpt["model"])
            for name, opt in optimizers.items():
                opt.load_state_dict(ckpt["optimizers"][name])
            history = {k: list(v) for k, v in ckpt["history"].items()}
            best = {**_no_best(), **ckpt["best"]}
            start_epoch = int(ckpt["epoch"])
            finished = bool(ckpt["finished"]) and start_epoch >= epochs
            _set_rng_state(ckpt["rng"])
            perm_gen.set_state(ckpt["rng"]["perm"])
            if finished:
                return _finish(model, history, best, restore_best, schedule_epochs)

    if data_on_device:
        tensors = tuple(t.to(dev) for t in tensors)
        if val_tensors is not None:
            val_tensors = tuple(t.to(dev) for t in val_tensors)
    n = len(tensors[0])
    drop_last = n >= batch_size
    steps_per_epoch = n // batch_size if drop_last else 1
    eff_batch = batch_size if drop_last else n
    eval_batch = max(batch_size, 1024)
    step_fn = getattr(model, "training_step", None)
    ddp_module = None
    if ddp and step_fn is None:
        from torch.nn.parallel import DistributedDataParallel

        ddp_module = DistributedDataParallel(
            _LossModule(model, loss_fn),
            device_ids=[dev.index] if dev.type == "cuda" else None,
            find_unused_parameters=getattr(model, "ddp_find_unused_parameters", False),
        )
    elif ddp:
        optimizers = {k: _GradientAveraging(o, world) for k, o in optimizers.items()}
    # the loss is checked after every step on a CPU, every 50 on a GPU or under DDP
    # (where checking means a collective operation); the report names the exact step
    check_every = 1 if dev.type == "cpu" and not ddp else 50

    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=epochs,
            initial=start_epoch,
            desc=type(model).__name__,
            unit="epoch",
            leave=True,
        )
    state = TrainState(start_epoch, epochs, start_epoch * steps_per_epoch, steps_per_epoch)
    stopped_early = False
    try:
        for epoch in range(start_epoch, epochs):
            state.epoch = epoch
            if hasattr(model, "on_epoch_start"):
                model.on_epoch_start(state)
            model.train()
            t0 = time.perf_counter()
            perm = torch.randperm(n, generator=perm_gen)
            if data_on_device:
                perm = perm.to(dev)
            sums: dict[str, torch.Tensor] = {}
            buffer: list[dict] = []
            buffer_start = state.step
            for b in range(steps_per_epoch):
                idx = perm[b * eff_batch : (b + 1) * eff_batch]
                if ddp:
                    idx = idx[rank::world]
                batch = _batch(tensors, idx, dev)
                if step_fn is not None:
                    terms = step_fn(batch, optimizers, state)
                else:
                    terms = _default_step(
                        model, batch, optimizers, loss_fn, grad_clip, ddp_module
                    )
                terms = {
                    k: (
                        v.detach()
                        if isinstance(v, torch.Tensor)
                        else torch.tensor(float(v))
                    )
                    for k, v in terms.items()
                }
                if "loss" not in terms:
                    raise ValueError("training_step must return a 'loss' entry")
                buffer.append(terms)
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + v.float()
                state.step += 1
                if len(buffer) >= check_every:
                    if ddp:
                        _sync_losses(buffer, world)
                    _check_finite(buffer, buffer_start, epoch, steps_per_epoch)
                    buffer, buffer_start = [], state.step
            if ddp:
                _sync_losses(buffer, world)
            _check_finite(buffer, buffer_start, epoch, steps_per_epoch)
            if ddp and sums:  # logged losses: the mean over the processes
                keys = sorted(sums)
                mean = _all_mean(
                    torch.stack([torch.as_tensor(sums[k]).float().cpu() for k in keys]),
                    world,
                )
                sums = dict(zip(keys, mean, strict=True))
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            seconds = time.perf_counter() - t0

            row: dict[str, float] = {"epoch": epoch + 1}
            for k, v in sums.items():
                row[f"train_{k}"] = float(v) / steps_per_epoch
            if val_tensors is not None:
                for k, v in _evaluate(model, val_tensors, dev, eval_batch, loss_fn).items():
                    row[f"val_{k}"] = v
            row["lr"] = next(iter(optimizers.values())).param_groups[0]["lr"]
            row["seconds"] = seconds
            row["images_per_s"] = steps_per_epoch * eff_batch / max(seconds, 1e-9)
            for k, v in row.items():
                history.setdefault(k, [math.nan] * epoch).append(v)

            if val_tensors is not None:
                weights = _loss_weights(row)
                if epoch < schedule_epochs or weights != best["weights"]:
                    # a new objective: epochs trained on another one do not compete
                    best = {**_no_best(), "weights": weights}
                if epoch >= schedule_epochs:
                    value = row["val_loss"]
                    if value < best["value"] - min_delta:
                        best = {
                            "value": value,
                            "epoch": epoch + 1,
                            "bad_epochs": 0,
                            "weights": weights,
                            "state": {
                                k: v.detach().clone() for k, v in model.state_dict().items()
                            },
                        }
                    else:
                        best["bad_epochs"] += 1
                stopped_early = patience is not None and best["bad_epochs"] >= patience
            done = stopped_early or epoch + 1 == epochs
            if path is not None and rank == 0:
                _atomic_save(
                    {
                        "format": CHECKPOINT_FORMAT,
                        "fingerprint": fingerprint,
                        "epoch": epochs if stopped_early else epoch + 1,
                        "finished": done,
                        "model": model.state_dict(),
                        "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
                        "history": history,
                        "best": best,
                        "rng": {**_rng_state(), "perm": perm_gen.get_state()},
                        "meta": dict(meta or {}),
                    },
                    path,
                )
            if ddp and path is not None:
                import torch.distributed as dist

                dist.barrier()  # the checkpoint is written before anyone goes on
            if bar is not None:
                bar.update(1)
                bar.set_postfix(
                    {
                        k: f"{v:.4g}"
                        for k, v in row.items()
                        if k in ("train_loss", "val_loss")
                    }
                )
            for cb in callbacks:
                cb(state, row)
            if stopped_early:
                break
    finally:
        if bar is not None:
            bar.close()
    return _finish(model, history, best, restore_best, schedule_epochs)


def _no_best() -> dict:
    return {"value": math.inf, "epoch": -1, "state": None, "bad_epochs": 0, "weights": []}


def _loss_weights(row: dict) -> list:
    """The loss weights an epoch trained with, as the model logged them
    (``train_*_weight``), rounded so that the mean over an epoch compares equal."""
    return sorted(
        (k, round(float(v), 9))
        for k, v in row.items()
        if k.startswith("train_") and k.endswith("_weight")
    )


def _finish(
    model, history: dict, best: dict, restore_best: bool, schedule_epochs: int = 0
) -> pd.DataFrame:
    """Restore the best epoch (when one qualified) and return the history.

    An epoch inside the schedule never qualifies, also in a checkpoint written before
    this rule existed."""
    out = pd.DataFrame(history)
    out.attrs["best_epoch"] = None
    if restore_best and best["state"] is not None and best["epoch"] > schedule_epochs:
        model.load_state_dict(best["state"])
        out.attrs["best_epoch"] = int(best["epoch"])
    return out


def load_or_train(
    name: str,
    model: nn.Module,
    x,
    *,
    directory: str | os.PathLike | None = None,
    retrain: bool = False,
    **fit_kwargs,
) -> tuple[nn.Module, pd.DataFrame]:
    """Load the finished model ``name`` when its checkpoint exists, train it otherwise.

    The checkpoint lives in :func:`phbook.config.checkpoint_dir` (one folder per profile)
    unless ``directory`` says otherwise. An interrupted training resumes where it
    stopped. A checkpoint made with another architecture, data, batch size, learning
    rate or seed is not used: the model is trained afresh (with a warning).
    ``retrain=True`` always trains from scratch; the finished checkpoint it replaces is
    kept aside until the new training has finished, and put back if it fails.
    """
    path = checkpoint_path(name, directory)
    previous = path.with_name(path.name + ".previous")
    if retrain and path.exists():
        os.replace(path, previous)
    try:
        history = fit(model, x, checkpoint=path, **fit_kwargs)
    except BaseException:
        if previous.exists():
            os.replace(previous, path)
        raise
    previous.unlink(missing_ok=True)
    model.eval()
    return model, history
