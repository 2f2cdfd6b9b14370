"""From samples as the dataset stores them to the model's input on its device.

Samples stay in the dataset's dtype on the host (uint8 images: a quarter of float32's bytes
in host memory, in the rehearsal buffer's slots and over its RMA reads), and become float32
only where the model runs: moved to the device first, then converted (uint8 scaled to
[0, 1]), so the host-to-device copy also moves a quarter of the bytes.
"""

from __future__ import annotations

import torch


class InputPipeline:
    def __init__(self, device):
        self.device = torch.device(device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if x.dtype == torch.uint8:
            x = x.to(torch.float32).div_(255.0)
        elif x.dtype != torch.float32:
            x = x.to(torch.float32)
        if x.dim() == 4 and self.device.type == "cuda":     # images: what channels_last models take
            x = x.contiguous(memory_format=torch.channels_last)
        return x
