"""What a stage gets: one unit, its settings, its folder, and where and how to compute.

Device and precision are resolved here, once per unit, and nowhere else: every stage moves its
model and data to ``ctx.device``, and every kernel computes where the model lives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import StudyConfig
from ..utils.provenance import device_name
from .plan import SECTIONS, Unit

# The kind of unit whose "auto" precision is bf16 on CUDA; every analysis stays fp32.
BF16_UNDER_AUTO = ("pretrain",)

# Unit kind -> (CPU, GPU) samples per batch when its section's batch_size is None ("auto"); a set value always wins.
# GPUs are filled by larger batches. The landscape's None on the CPU: the kernel measures it (cpu_batch_size, 32-256).
AUTO_BATCH_SIZES = {
    "landscape": (None, 1024),
    "sharpness": (256, 512),
    "robustness": (256, 1024),
}


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> this process's GPU if there is one (its local rank's under torchrun), else the CPU."""
    from ..distributed import local_device

    return local_device(name)


def resolve_precision(precision: str, device: torch.device, kind: str) -> str:
    """``auto`` -> "bf16" for pretraining on CUDA, "fp32" for everything else; "fp32"/"bf16" as given."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" and kind in BF16_UNDER_AUTO else "fp32"
    return precision


def enable_cudnn_benchmark(device: torch.device) -> bool:
    """On CUDA, let cuDNN time its convolution algorithms once per input shape and keep the fastest:
    every stage's loops run the same few shapes over and over. Nothing to do elsewhere."""
    if device.type != "cuda":
        return False
    torch.backends.cudnn.benchmark = True
    return True


def enable_tf32(device: torch.device) -> bool:
    """fp32 matmuls and convolutions on CUDA use TF32 (the usual trade; recorded in every manifest)."""
    if device.type != "cuda":
        return False
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    return True


@dataclass
class StageContext:
    """Everything one stage needs for one unit. ``inputs`` maps roles ("encoder", "probe",
    "snapshots") to files; ``record`` is stored in the sidecars of what the stage writes."""

    unit: Unit
    config: StudyConfig
    settings: Any  # the stage's own config section (a dataclass of contrastlab.config)
    folder: Path
    device: torch.device
    precision: str  # "fp32" | "bf16", resolved
    run_dir: Path | None = None
    inputs: dict[str, list[Path]] = field(default_factory=dict)
    progress: bool = False
    record: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)  # extra manifest fields a stage adds (e.g. "encoder")

    def input(self, role: str) -> Path:
        """The one input file of ``role``."""
        paths = self.inputs.get(role, [])
        if len(paths) != 1:
            raise KeyError(f"unit {self.unit.id} has {len(paths)} '{role}' inputs, expected one")
        return paths[0]

    def batch_size(self, configured: int | None) -> int | None:
        """``configured`` when set, else this unit kind's default for this device (:data:`AUTO_BATCH_SIZES`)."""
        if configured is not None:
            return configured
        cpu, gpu = AUTO_BATCH_SIZES[self.unit.kind]
        return cpu if self.device.type == "cpu" else gpu

    def execution(self) -> dict[str, Any]:
        """Where and how the unit computed, for its manifest (CPU results also depend on the thread count)."""
        return {"device": str(self.device), "device_name": device_name(self.device), "precision": self.precision,
                "tf32": self.device.type == "cuda", "cudnn_benchmark": self.device.type == "cuda", "threads": torch.get_num_threads()}


def unit_context(unit: Unit, config: StudyConfig, run_dir: Path, folder: Path, progress: bool = False,
                 device: torch.device | None = None) -> StageContext:
    """The context of a study unit: inputs from its upstream units' folders, device and precision resolved."""
    device = resolve_device(config.device) if device is None else device
    enable_tf32(device)  # before the stage computes anything, as its manifest will say
    enable_cudnn_benchmark(device)
    inputs: dict[str, list[Path]] = {}
    for role, relative in unit.inputs:
        inputs.setdefault(role, []).append(run_dir / relative)
    return StageContext(unit=unit, config=config, settings=SECTIONS[unit.kind](config), folder=folder, device=device,
                        precision=resolve_precision(config.precision, device, unit.kind), run_dir=run_dir, inputs=inputs,
                        progress=progress, record={"unit": unit.id, "unit_key": unit.key, "study": config.name})
