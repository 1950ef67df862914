"""Memory layout of the convolutions: channels-last where it makes them faster.

A convolution reads, for each output pixel, every channel of a neighbourhood. With the
channels of a pixel next to each other in memory (``torch.channels_last``, "NHWC") instead of
one whole plane per channel (the contiguous "NCHW" layout), oneDNN's CPU convolutions run
faster and skip the reorders between layouts that a contiguous tensor costs them.

On the CPU, both the TAESD family and the Stable Diffusion VAE run faster channels-last, and
their outputs agree with the contiguous layout's to float precision, so ``"auto"`` chooses it
there (``benchmarks/README.md`` has the timings). ``torch.compile`` and bfloat16 autocast
were slower on the CPU and are not defaults.

On CUDA this package has not compared the layouts, so ``"auto"`` keeps the contiguous one
there; ``memory_format="channels_last"`` asks for it (cuDNN often prefers it in half
precision).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import torch

from ..validation import check_choice

MEMORY_FORMATS = ("auto", "channels_last", "contiguous")
"""Values of ``memory_format`` (:meth:`~latent_ot.autoencoders.Autoencoder.set_memory_format`)."""

AUTO_MEMORY_FORMATS: Mapping[str, str] = MappingProxyType({"cpu": "channels_last"})
"""What ``memory_format="auto"`` gives on each device type, for the convolutional adapters of
this package (TAESD family, diffusers ``AutoencoderKL`` and ``AutoencoderTiny``); device types
not listed (CUDA, not compared here) keep ``"contiguous"``."""

_TORCH_FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


def _check_memory_format(memory_format: object) -> str:
    return check_choice(memory_format, "memory_format", MEMORY_FORMATS)


def _resolve_memory_format(requested: str, device: torch.device, convolutional: bool) -> str:
    """``"channels_last"`` or ``"contiguous"``: what ``requested`` means on ``device``."""
    if requested != "auto":
        return requested
    if not convolutional:
        return "contiguous"
    return AUTO_MEMORY_FORMATS.get(device.type, "contiguous")


def _torch_format(memory_format: str) -> torch.memory_format:
    return _TORCH_FORMATS[memory_format]
