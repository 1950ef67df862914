"""The networks behind the metrics: the default ones, the checks of your own, feature passes.

The default networks come from optional packages, through torchmetrics: the FID Inception-v3
(``torch-fidelity``) for FID, KID and IS, and the LPIPS backbones (``torchvision``). The
``metrics`` extra installs both: ``pip install "latent-ot[metrics]"``. When one is missing,
the error says what to install, or which network of your own to pass instead.

A network of your own runs on the device of its first parameter or buffer (the CPU if it has
none); `_extract_features` runs any network over same-size batches and checks what it gives.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from ..devices import resolve_device
from ..exceptions import first_line
from ..pipeline.statistics import batch_name
from ._pixels import named_pixels, same_size_batches

__all__: list[str] = []

_METRICS_EXTRA = 'pip install "latent-ot[metrics]"'
_LPIPS_BACKBONES = ("alex", "vgg", "squeeze")


# --------------------------------------------------------------------------- optional packages


class _MissingPackageError(ModuleNotFoundError):
    """A package a metric needs could not be imported.

    ``reason`` says which (one line) and ``remedy`` what to do, so that a caller that skips
    the metric can say both without parsing the message.
    """

    def __init__(self, purpose: str, package: str, module: str, reason: str, remedy: str):
        super().__init__(f"{purpose} {reason}; {remedy}", name=module)
        self.package = package
        self.reason = reason
        self.remedy = remedy


def _install_remedy(package: str | None, alternative: str) -> str:
    """What to do about a missing optional package: the extra, the package, or a network."""
    single = f" (or pip install {package})" if package else ""
    return f"{_METRICS_EXTRA}{single}, or pass {alternative}"


def _require(module: str, package: str, purpose: str, remedy: str) -> None:
    """Raise ModuleNotFoundError, saying what to install or pass instead, unless importable."""
    try:
        __import__(module)
    except Exception as err:  # a broken install (say, a mismatched torchvision) counts as missing
        detail = first_line(f"{type(err).__name__}: {err}")
        reason = f"needs {package}, which could not be imported ({detail})"
        raise _MissingPackageError(purpose, package, module, reason, remedy) from err


def _require_torchmetrics() -> None:
    _require(
        "torchmetrics",
        "torchmetrics",
        "latent_ot.metrics",
        _METRICS_EXTRA,  # optional: the metrics extra installs it
    )


# --------------------------------------------------------------------------- default networks


class _InceptionV3(nn.Module):
    """The FID Inception-v3 of torchmetrics (torch-fidelity's weights), fed [0, 1] images."""

    def __init__(self, output: str) -> None:
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.network = NoTrainInceptionV3(name="inception-v3-compat", features_list=[output])

    def forward(self, images: Tensor) -> Tensor:
        # As torchmetrics does for normalize=True: the network was trained on 8-bit pixels.
        return self.network((images * 255).byte())


def _default_inception(output: str, device: torch.device, metric: str, argument: str) -> nn.Module:
    _require_torchmetrics()
    _require(
        "torch_fidelity",
        "torch-fidelity",
        f"{metric} with the default Inception-v3 network",
        _install_remedy("torch-fidelity", f"{argument}=<your network>"),
    )
    return _InceptionV3(output).to(device)


def _extractor(
    feature_extractor: Any, device: Any, metric: str, argument: str = "feature_extractor"
) -> Any:
    """The network of ``argument``: the caller's, checked, or the default Inception-v3."""
    _require_torchmetrics()
    if feature_extractor is None:
        output = "logits_unbiased" if argument == "classifier" else "2048"
        return _default_inception(output, resolve_device(device), metric, argument)
    _check_network(feature_extractor, argument)
    return feature_extractor


def _default_lpips(backbone: str, device: torch.device) -> nn.Module:
    """torchmetrics' LPIPS with a named backbone and its calibrated weights, on ``device``."""
    _require_torchmetrics()
    _require(
        "torchvision",
        "torchvision",
        f"lpips with the {backbone!r} network",
        _install_remedy("torchvision", "net=<network>"),
    )
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    return LearnedPerceptualImagePatchSimilarity(net_type=backbone, normalize=True).to(device)


# --------------------------------------------------------------------------- your networks


def _check_network(network: Any, name: str) -> None:
    if not callable(network):
        raise TypeError(
            f"{name} must be a torch module or a callable, got {type(network).__name__}"
        )


def _network_device(network: Any) -> torch.device:
    """Where an injected network runs: the device of its first parameter or buffer."""
    if isinstance(network, nn.Module):
        for tensor in itertools.chain(network.parameters(), network.buffers()):
            return tensor.device
    return torch.device("cpu")


def _describe_output(output: Any) -> str:
    if isinstance(output, Tensor):
        return f"a tensor of shape {tuple(output.shape)}"
    return f"an object of type {type(output).__name__}"


# --------------------------------------------------------------------------- feature passes


def _extract_features(
    named: Iterable[tuple[str, Tensor]],
    network: Any,
    *,
    argument: str,
    source: str,
    batch_size: int,
) -> Tensor:
    """Run ``network`` over same-size batches: an ``n x d`` float64 tensor on the CPU.

    ``argument`` names the network and ``source`` the image set in error messages.
    """
    device = _network_device(network)
    batches: list[Tensor] = []
    for names, pixels in same_size_batches(named, batch_size):
        with torch.inference_mode():
            output = network(pixels.to(device))
        _check_features(output, batches, names, argument)
        batches.append(output.detach().cpu().double())
    if not batches:
        raise ValueError(f"{source} is empty: expected at least one image")
    return torch.cat(batches)


def _check_features(output: Any, before: list[Tensor], names: list[str], argument: str) -> None:
    name = batch_name(names)
    if not isinstance(output, Tensor) or output.ndim != 2 or len(output) != len(names):
        raise ValueError(
            f"{argument} must map an N x 3 x H x W batch to an N x d tensor; on {name} "
            f"(N = {len(names)}) it returned {_describe_output(output)}"
        )
    if not bool(torch.isfinite(output).all()):
        raise ValueError(f"{argument} returned NaN or infinite values on {name}")
    if before and output.shape[1] != before[0].shape[1]:
        raise ValueError(
            f"{argument} returned {output.shape[1]} features on {name} but "
            f"{before[0].shape[1]} before; it must give as many for every image size"
        )


def _image_features(
    images: Any, source: str, network: Any, argument: str, batch_size: int
) -> Tensor:
    """The features ``network`` gives every image of a set (see `_extract_features`)."""
    return _extract_features(
        named_pixels(images, source),
        network,
        argument=argument,
        source=source,
        batch_size=batch_size,
    )
