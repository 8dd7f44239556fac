"""Where training runs (``train.device``) and in which precision (``train.precision``).

Device: ``auto`` takes a CUDA GPU when PyTorch sees one and the CPU otherwise; Apple's ``mps`` is
used only when asked for. Under torchrun every process of a machine takes its own GPU, the one
numbered LOCAL_RANK.

Precision follows PyTorch's automatic mixed precision recipe: weights, gradients and Adam's moments
stay fp32; ``bf16`` and ``fp16`` run the forward pass under ``torch.autocast``, which computes matrix
products (and, on GPUs, the RNNs) in 16 bits and keeps softmax, losses and reductions in fp32. ``fp16`` has
too few exponent bits for small gradients, so its loss is scaled up before ``backward`` and the
gradients scaled back before clipping (``torch.amp.GradScaler``); bf16 needs no scaling.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from dataclasses import dataclass
from typing import Callable, ContextManager

import numpy as np
import torch
from torch import nn

from attnmt.config import DecodeConfig
from attnmt.errors import ConfigError

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(spec: str, local_rank: int | None = None, cuda_count: int | None = None,
                   mps_available: bool | None = None) -> torch.device:
    """The torch device that ``train.device = spec`` means for this process.

    local_rank: this process's number on its machine when torchrun started several, else None.
    cuda_count, mps_available: what the machine has (None: ask PyTorch).
    """
    if cuda_count is None:
        cuda_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if mps_available is None:
        mps_available = torch.backends.mps.is_available()
    if spec == "cpu" or (spec == "auto" and cuda_count == 0):
        return torch.device("cpu")
    if spec == "mps":
        if local_rank is not None:
            raise ConfigError("train.device=mps cannot train on several processes (PyTorch has no distributed "
                              "backend for it); start one process, or use cuda or cpu under torchrun")
        if not mps_available:
            raise ConfigError("train.device=mps but PyTorch sees no Apple GPU (torch.backends.mps.is_available() "
                              "is False); use cpu or auto")
        return torch.device("mps")
    if cuda_count == 0:
        raise ConfigError(f"train.device={spec} but PyTorch sees no CUDA GPU (a CPU-only build of PyTorch, or "
                          "no driver?); use cpu or auto, or install the CUDA build of PyTorch (see the README)")
    if spec.startswith("cuda:"):
        if local_rank is not None:
            raise ConfigError(f"train.device={spec}: under torchrun every process takes the GPU numbered by its "
                              "LOCAL_RANK; set train.device to cuda (or auto) and choose the GPUs with "
                              "CUDA_VISIBLE_DEVICES")
        index = int(spec.split(":", 1)[1])
        if index >= cuda_count:
            raise ConfigError(f"train.device={spec} but PyTorch sees {cuda_count} GPU(s), numbered from 0")
        return torch.device("cuda", index)
    index = local_rank or 0  # "cuda", or "auto" on a machine with a GPU
    if index >= cuda_count:
        raise ConfigError(f"torchrun started a process with LOCAL_RANK {index} but this machine has {cuda_count} "
                          "GPU(s): start at most one process per GPU (--nproc_per_node)")
    return torch.device("cuda", index)


@dataclass
class MixedPrecision:
    """Autocast for the forward pass and the gradient scaler for ``backward``, as ``precision`` says.

    With fp32 both do nothing: ``autocast()`` is a null context and the scaler is disabled, so
    ``scaler.scale(loss)`` is ``loss`` and ``scaler.step(optimizer)`` is ``optimizer.step()``.
    """

    precision: str
    device: torch.device
    scaler: torch.amp.GradScaler

    @classmethod
    def create(cls, precision: str, device: torch.device) -> "MixedPrecision":
        """Check that ``device`` can train in ``precision`` (a ConfigError says why not)."""
        if precision == "fp16" and device.type != "cuda":
            raise ConfigError(f"train.precision=fp16 needs a CUDA GPU (its loss scaling is CUDA's), but training "
                              f"runs on {device}; use bf16 or fp32 there")
        if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError(f"train.precision=bf16: the GPU {torch.cuda.get_device_name(device)} has no bfloat16 "
                              "(it needs an Ampere GPU or newer); use fp16 there")
        scaler_device = device.type if precision == "fp16" else "cpu"  # a disabled scaler never touches its device
        return cls(precision, device, torch.amp.GradScaler(scaler_device, enabled=precision == "fp16"))

    def autocast(self) -> ContextManager:
        return autocast(self.precision, self.device)


def autocast(precision: str, device: torch.device) -> ContextManager:
    """``torch.autocast`` to bf16 or fp16 on ``device``; a null context for fp32 and int8."""
    if precision not in _DTYPES:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


INFERENCE_PRECISIONS = ("fp32", "bf16", "int8")


def check_inference_precision(precision: str, device: torch.device) -> None:
    """Translation runs in fp32, under bf16 autocast, or (on a CPU) with int8 weights; ConfigError otherwise."""
    if precision not in INFERENCE_PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(INFERENCE_PRECISIONS)}; got {precision!r}")
    if precision == "int8" and device.type != "cpu":
        raise ConfigError(f"int8 (dynamic quantization) runs on the CPU only, not on {device}; use bf16 there")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"the GPU {torch.cuda.get_device_name(device)} has no bfloat16; use fp32")


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose linear and recurrent layers hold int8 weights (PyTorch dynamic
    quantization: activations are quantized on the fly, per batch), for faster decoding on CPUs."""
    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of the torchao package, but still the only
        # int8 path for nn.GRU and nn.LSTM that ships with PyTorch itself.
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear, nn.GRU, nn.LSTM}, dtype=torch.qint8)


def tensors_on(device: torch.device | str) -> Callable[[np.ndarray], torch.Tensor]:
    """What makes a PyTorch model's inputs from numpy arrays (``as_input`` of attnmt.decoding):
    the array as a tensor on ``device``."""
    return functools.partial(_tensor_on, device=device)


def _tensor_on(array: np.ndarray, device: torch.device | str) -> torch.Tensor:
    return torch.from_numpy(array).to(device)


def sampling_generator(decode: DecodeConfig, device: torch.device | str = "cpu") -> torch.Generator:
    """The random generator that sampling with ``decode.seed`` draws from."""
    return torch.Generator(device).manual_seed(decode.seed)
