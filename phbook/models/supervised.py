"""A small supervised CNN: the ceiling an unsupervised detector is measured against.

An unsupervised detector never sees an anomaly. To say how much that costs, chapter 9
trains this classifier *with* labels, on a separate labelled set of the same anomaly
classes (another simulation seed), and scores the same test set as every detector.
What it cannot separate is invisible in the frames themselves (e.g. the faintest
anomalies of the benchmark, which add less light than a normal frame's noise);
what it separates and an unsupervised detector does not is what the latter leaves
on the table.

The network is two 3x3 convolution blocks (ReLU, 2x2 max-pooling), the maximum and
the mean of each feature map over positions (an anomaly counts wherever it lies), and a
two-layer head with one output, the logit of ``P(anomaly | x)``; it is trained by
:func:`phbook.train.fit` on ``(x, y)`` batches with a class-weighted binary
cross-entropy (``pos_weight`` = normal / anomalous frames, so both classes count
equally whatever their numbers).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .ae import as_image_batch, image_hw

__all__ = ["FrameClassifier"]


class FrameClassifier(nn.Module):
    """``forward(x)`` -> logit of ``P(anomaly | x)``, shape ``(N,)``.

    ``channels``: output channels of the convolution blocks (each halves the image);
    ``hidden``: width of the head; ``pos_weight``: weight of the anomalous class in
    the loss (set from the labels by the detector).
    """

    def __init__(
        self,
        image_size: int | Sequence[int] = 16,
        channels: Sequence[int] = (16, 32),
        hidden: int = 64,
        pos_weight: float = 1.0,
    ):
        super().__init__()
        self.image_hw = image_hw(image_size, min_size=2 ** len(channels))
        layers: list[nn.Module] = []
        c_in = 1
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c
        self.features = nn.Sequential(*layers)
        # global max and mean over positions: an anomaly counts wherever it lies
        self.head = nn.Sequential(
            nn.Linear(2 * c_in, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )
        self.register_buffer("pos_weight", torch.tensor(float(pos_weight)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = as_image_batch(x, self.image_hw, "x")
        f = self.features(x).flatten(2)
        return self.head(torch.cat([f.amax(2), f.mean(2)], 1)).squeeze(1)

    def loss(self, batch) -> dict[str, torch.Tensor]:
        """Class-weighted binary cross-entropy of a batch ``(x, y)``, ``y`` in {0, 1}."""
        x, y = batch
        logits = self(x)
        y = y.to(logits.dtype)
        bce = F.binary_cross_entropy_with_logits(logits, y, pos_weight=self.pos_weight)
        acc = ((logits > 0).to(y.dtype) == y).to(logits.dtype).mean()
        return {"loss": bce, "accuracy": acc.detach()}
