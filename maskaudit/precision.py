"""The floating-point precision the U-Net runs in: one rule for training and inference.

The U-Net trains under autocast (fp16 on CUDA, bf16 on CPUs that compute it natively) in
channels-last memory on a CPU, and it runs the same way when it scores and predicts: a network
trained in bf16 is not less accurate in it, and on this project's CPU its forward pass is about
3x faster than in fp32 (docs/BENCHMARKS.md, section 0.4). The QAM always runs in fp32.
"""

from __future__ import annotations

import functools

import torch

__all__ = ["autocast_dtype", "dtype_name", "segmenter_forward"]


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype of the U-Net on ``device``, in training and inference alike, or None for plain fp32.

    ``auto`` means fp16 on CUDA and bf16 on CPUs that compute it natively (AVX512-BF16 or AMX),
    where it is about 1.7x faster at equal detection quality (docs/BENCHMARKS.md).
    """
    if precision == "fp32":
        return None
    if device.type == "cuda":
        return torch.bfloat16 if precision == "bf16" else torch.float16
    if precision == "bf16":
        return torch.bfloat16
    capability = torch.backends.cpu.get_cpu_capability()
    native = "AMX" in capability or (capability == "AVX512" and _cpu_flag("avx512_bf16"))
    return torch.bfloat16 if native else None


def dtype_name(device: torch.device, precision: str) -> str:
    """The name of the dtype the U-Net computes in on ``device`` under ``precision``: "float32",
    "bfloat16" or "float16" (what run.json records: same seed, same scores holds within one)."""
    return str(autocast_dtype(device, precision) or torch.float32).removeprefix("torch.")


@functools.cache  # read once per process: inference asks for every batch, and /proc/cpuinfo grows with the cores
def _cpu_flag(flag: str) -> bool:
    """Whether /proc/cpuinfo lists ``flag`` (False where there is no /proc)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as handle:
            return any(flag in line.split() for line in handle if line.startswith("flags"))
    except OSError:
        return False


def segmenter_forward(unet: torch.nn.Module, images: torch.Tensor, *, precision: str = "auto"
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The U-Net's (logits, bottleneck features) as float32 for images (b, C, S, S) float in [0, 1],
    under :func:`autocast_dtype` of ``precision`` and, on a CPU, in channels-last memory (the
    network's parameters are converted to it in place, the first time)."""
    amp_dtype = autocast_dtype(images.device, precision)
    if images.device.type == "cpu":
        if not all(p.is_contiguous(memory_format=torch.channels_last) for p in unet.parameters() if p.dim() == 4):
            unet.to(memory_format=torch.channels_last)  # once: the check costs a quarter of the conversion
        images = images.contiguous(memory_format=torch.channels_last)
    with torch.autocast(images.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        logits, bottleneck = unet(images)
    return logits.float(), bottleneck.float()
