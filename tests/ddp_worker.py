"""Run by tests/test_distributed.py under ``torchrun --nproc_per_node 2`` (gloo, CPU).

Trains the models of ``ddp_models`` with :func:`phbook.train.fit` under DDP and, from
rank 0, saves their weights and loss histories for the test to compare with a
one-process run. Usage: ``torchrun ... ddp_worker.py OUT_DIR``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from ddp_models import BATCH, EPOCHS, data, make_models

from phbook import train, train_ddp


def main(out: Path) -> None:
    rank, world = train_ddp.init_ddp()
    assert world == 2, world
    x = data()
    for name, model in make_models().items():
        ckpt = out / f"{name}.ckpt.pt"
        hist = train.fit(
            model,
            x,
            epochs=EPOCHS,
            batch_size=BATCH,
            lr=1e-2,
            seed=1,
            checkpoint=ckpt,
            progress=False,
        )
        if train_ddp.is_main_process():
            torch.save(
                {
                    "state": model.state_dict(),
                    "loss": hist["train_loss"].tolist(),
                    "world": world,
                },
                out / f"{name}.ddp.pt",
            )
    train_ddp.cleanup_ddp()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
