"""A tiny ONNX matting model with U²-Net's signature, for tests and the benchmark of the rembg path.

Input `input.1` 1×3×320×320 (rembg's normalised RGB), output 1×1×320×320: a sigmoid of how far the sum of the
normalised channels is below a threshold — "darker than a light background is foreground". Real onnxruntime
inference through rembg's own session code, no download.
"""

from __future__ import annotations

import warnings
from pathlib import Path

#: sum of rembg-normalised channels between a light background (~6.7) and the synthetic figures (≤ ~2)
THRESHOLD = 4.5


def build_tiny_u2net(path: Path, *, gain: float = 5.0, threshold: float = THRESHOLD) -> Path:
    """Export the model to `path` (an .onnx file) with torch.onnx (TorchScript exporter, opset 17)."""
    import torch

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 1, 1)
            with torch.no_grad():
                self.conv.weight.fill_(-gain)
                self.conv.bias.fill_(gain * threshold)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            d = torch.sigmoid(self.conv(x))
            return d, d  # U²-Net returns several side outputs; rembg reads the first

    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # the TorchScript exporter warns that it is the legacy one (no onnxscript here)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(Tiny().eval(), (torch.zeros(1, 3, 320, 320),), str(path), input_names=["input.1"],
                          output_names=["d0", "d1"], opset_version=17, dynamo=False)
    return path
