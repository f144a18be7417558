"""What produced an artifact: package and library versions, device, host."""

from __future__ import annotations

import platform
import sys

import numpy as np
import torch

from .. import __version__


def provenance(device: str | None = None) -> dict:
    info = {
        "contrastlab": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }
    if device is not None:
        info["device"] = str(device)
        info["device_name"] = device_name(device)
    return info


def device_name(device: torch.device | str) -> str:
    """A readable name of ``device``: the GPU's name, or the CPU's model."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or device.type
