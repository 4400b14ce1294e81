"""The nucleus network: a small U-Net that sees nuclei about `CANONICAL_DIAMETER` px across.

Two output maps per pixel (logits): foreground (inside a nucleus) and centredness (distance to
the nucleus' own edge over its largest such distance: 1 at the centre, 0 at the edge and where
two nuclei touch). Seeds where centredness is high split touching nuclei, so no distance-based
splitting rule has to be guessed (`instances`).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CANONICAL_DIAMETER", "NucleusNet"]

CANONICAL_DIAMETER = 16.0  # px: images are rescaled so nuclei have this diameter
OUTPUTS = ("foreground", "centredness")


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class NucleusNet(nn.Module):
    """U-Net with ``len(widths)`` levels; input (B, 1, H, W) with H, W multiples of 2**(levels-1)."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 48, 64)):
        super().__init__()
        self.widths = tuple(int(w) for w in widths)
        self.down = nn.ModuleList()
        cin = 1
        for w in self.widths:
            self.down.append(_block(cin, w))
            cin = w
        self.up = nn.ModuleList()
        for w_skip, w_low in zip(self.widths[-2::-1], self.widths[:0:-1], strict=True):
            self.up.append(_block(w_skip + w_low, w_skip))
        self.head = nn.Conv2d(self.widths[0], len(OUTPUTS), 1)

    @property
    def multiple(self) -> int:
        return 2 ** (len(self.widths) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = nn.functional.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        for block, skip in zip(self.up, skips[-2::-1], strict=True):
            x = nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")
            x = block(torch.cat([skip, x], dim=1))
        return self.head(x)
