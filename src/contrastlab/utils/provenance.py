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
        if str(device).startswith("cuda") and torch.cuda.is_available():
            info["device_name"] = torch.cuda.get_device_name(torch.device(device))
    return info


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda if available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
