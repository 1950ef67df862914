"""Image quality metrics: distortion, perceptual quality and the latent W2 distance.

Distortion, between each image and its reference (pairs may differ in size from pair to pair):

- `psnr` and `ssim`, computed by torchmetrics;
- `lpips`, with torchmetrics' LPIPS networks or with any network you bring.

Perceptual quality, between the distributions of two image sets (unpaired):

- `fid`, `kid` and `inception_score`, computed by torchmetrics on features of any network;
- `patch_fid`: FID over many crops per image, which makes FID meaningful on a dozen images;
- `latent_w2`: the W2 distance between the Gaussians of latent patches that the transport of
  this package fits, i.e. what it minimises.

`evaluate` computes a table of several of them at once.

Images are anything `latent_ot.io.ImageSource` accepts: a ``N x 3 x H x W`` float tensor in
[0, 1], a list of ``3 x H x W`` tensors of different sizes, PIL images, numpy arrays, paths,
a directory. Every metric reads pixels in [0, 1]: PSNR's peak is 1 (the same as 255 on uint8
pixels), and the networks receive ``N x 3 x H x W`` float batches in [0, 1].

Networks
--------
The default networks are those of the papers, through torchmetrics: Inception-v3 with the
FID weights (needs ``torch-fidelity``) for FID, KID and IS, and AlexNet LPIPS (needs
``torchvision``). They download their weights on first use. Every metric also takes a
network of your own instead, which is how the tests run without a network connection:

- ``feature_extractor`` (FID, KID, patch FID): ``N x 3 x H x W -> N x d`` features;
- ``classifier`` (IS): ``N x 3 x H x W -> N x n_classes`` logits;
- ``net`` (LPIPS): ``N x 3 x H x W ->`` a list of feature maps ``N x C_k x h_k x w_k``.

A network of your own runs as it is (put it in evaluation mode with ``.eval()``), on the
device of its parameters (the CPU if it has none), and sees its input in [0, 1]: normalise
inside it if it expects another range. The default
networks run on ``device``. Same-size images are batched together, ``batch_size`` at a time.
"""

from __future__ import annotations

import itertools
import numbers
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.utils import check_random_state
from torch import Tensor, nn

from .autoencoders import Autoencoder, load_autoencoder
from .devices import resolve_device
from .gaussian import w2_distance
from .encoding import batch_name, batches_by_size, pad_to_multiple
from .io import ImageSource
from .patches import iter_patch_chunks
from .stats import GaussianStats

__all__ = [
    "DEFAULT_METRICS",
    "METRICS",
    "evaluate",
    "fid",
    "inception_score",
    "kid",
    "latent_w2",
    "lpips",
    "patch_fid",
    "psnr",
    "ssim",
]

METRICS = ("psnr", "ssim", "lpips", "fid", "kid", "is", "patch_fid", "latent_w2")
"""Every metric name `evaluate` knows."""

DEFAULT_METRICS = ("psnr", "ssim", "lpips", "fid", "kid", "is", "patch_fid")
"""What `evaluate` computes when no metrics are named (plus ``latent_w2`` given an autoencoder)."""

_PAIRED_METRICS = ("psnr", "ssim", "lpips")
_LPIPS_BACKBONES = ("alex", "vgg", "squeeze")
_SSIM_WINDOW = 11  # torchmetrics' default Gaussian window (sigma 1.5), as in Wang et al. 2004
_LPIPS_EPS = 1e-8  # inside the square root of the channel norm, as torchmetrics' LPIPS
# evaluate's IS splits hold at least this many images: p(y) needs many images per split.
_IS_SPLIT_SIZE = 100

# (image, reference image, pair name) -> score
_PairScorer = Callable[[Tensor, Tensor, str], float]


# --------------------------------------------------------------------------- argument checks


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_reduction(reduction: Any) -> None:
    if reduction not in ("mean", None):
        raise ValueError(f"reduction must be 'mean' or None, got {reduction!r}")


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


# --------------------------------------------------------------------------- optional packages


def _require(module: str, package: str, purpose: str, alternative: str) -> None:
    """Raise ModuleNotFoundError, saying what to install or pass instead, unless importable."""
    try:
        __import__(module)
    except Exception as err:  # a broken install (say, a mismatched torchvision) counts as missing
        raise ModuleNotFoundError(
            f"{purpose} needs {package} (pip install {package}), which could not be imported "
            f"({type(err).__name__}: {err}); or pass {alternative}"
        ) from err


def _require_torchmetrics() -> None:
    _require(
        "torchmetrics",
        "torchmetrics",
        "latent_ot.metrics",
        "nothing else: torchmetrics is a dependency of latent-ot, reinstall it",
    )


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
        f"{argument}=<your network>",
    )
    return _InceptionV3(output).to(device)


# --------------------------------------------------------------------------- reading images


def _same_size_batches(
    named_pixels: Iterable[tuple[str, Tensor]], batch_size: int
) -> Iterator[tuple[list[str], Tensor]]:
    """``(names, N x 3 x H x W batch)`` for images of equal size, ``batch_size`` at most."""
    for group in batches_by_size(named_pixels, batch_size, pixels=lambda entry: entry[1]):
        yield [name for name, _ in group], torch.stack([image for _, image in group])


def _named_pixels(images: Any, name: str) -> Iterator[tuple[str, Tensor]]:
    for item in ImageSource(images, name=name):
        yield item.name, item.pixels


def _pairs(images: Any, reference: Any) -> Iterator[tuple[str, Tensor, Tensor]]:
    """Yield ``(name, image, reference image)``, checking counts and sizes pair by pair."""
    count = 0
    pairs = itertools.zip_longest(
        ImageSource(images, name="images"), ImageSource(reference, name="reference")
    )
    for image, target in pairs:
        if image is None or target is None:
            longer, shorter = ("images", "reference") if target is None else ("reference", "images")
            raise ValueError(
                f"{longer} has more images than {shorter}, which holds {count}; paired metrics "
                "compare images[i] with reference[i]"
            )
        if image.pixels.shape != target.pixels.shape:
            raise ValueError(
                f"{image.name} is {_size(image.pixels)} px but {target.name} is "
                f"{_size(target.pixels)} px; paired metrics need equal sizes"
            )
        count += 1
        yield image.name, image.pixels, target.pixels.to(image.pixels.device)
    if count == 0:
        raise ValueError("images and reference are empty: expected at least one pair")


def _size(pixels: Tensor) -> str:
    return f"{pixels.shape[-2]} x {pixels.shape[-1]}"


# --------------------------------------------------------------------------- paired metrics


def _paired_scores(images: Any, reference: Any, scorers: dict[str, _PairScorer]) -> dict:
    """Per-pair scores of every scorer, in one pass over the pairs."""
    scores: dict[str, list[float]] = {metric: [] for metric in scorers}
    for name, image, target in _pairs(images, reference):
        for metric, score in scorers.items():
            scores[metric].append(score(image, target, name))
    return {metric: np.asarray(values, dtype=np.float64) for metric, values in scores.items()}


def _reduced(scores: np.ndarray, reduction: str | None) -> float | np.ndarray:
    return float(scores.mean()) if reduction == "mean" else scores


def _psnr_pair(image: Tensor, target: Tensor, name: str) -> float:
    from torchmetrics.functional.image import peak_signal_noise_ratio

    pair = image.double()[None], target.double()[None]
    return float(peak_signal_noise_ratio(*pair, data_range=1.0))


def _ssim_pair(image: Tensor, target: Tensor, name: str) -> float:
    from torchmetrics.functional.image import structural_similarity_index_measure

    if min(image.shape[-2:]) < _SSIM_WINDOW:
        raise ValueError(
            f"{name} is {_size(image)} px; ssim needs at least {_SSIM_WINDOW} x {_SSIM_WINDOW} "
            "(its Gaussian window)"
        )
    pair = image.double()[None], target.double()[None]
    _, ssim_map = structural_similarity_index_measure(*pair, data_range=1.0, return_full_image=True)
    # Only windows inside the image, as Wang et al.'s code and scikit-image: torchmetrics' own
    # mean also counts the border, where its windows reach into a reflection of the image.
    border = _SSIM_WINDOW // 2
    return float(ssim_map[..., border:-border, border:-border].mean())


def psnr(images: Any, reference: Any, *, reduction: str | None = "mean") -> float | np.ndarray:
    """Peak signal-to-noise ratio of each image against its reference, in dB.

    Computed by torchmetrics on RGB pixels in [0, 1] (peak 1), in float64.

    Parameters
    ----------
    images, reference : images
        The same number of images, pairwise of equal size (see `latent_ot.io.ImageSource`).
    reduction : {"mean", None}, default "mean"
        ``"mean"``: the mean of the per-pair PSNRs (not the PSNR of the pooled error);
        None: the per-pair values. Identical pairs give ``inf``.

    Returns
    -------
    float or numpy.ndarray

    Raises
    ------
    ValueError
        If the counts differ, a pair differs in size, or there are no images.

    Examples
    --------
    >>> import torch
    >>> reference = torch.full((2, 3, 8, 8), 0.5)
    >>> round(psnr(reference + 0.1, reference), 4)  # an error of 0.1: 10 log10(1 / 0.01)
    20.0
    """
    _check_reduction(reduction)
    _require_torchmetrics()
    return _reduced(_paired_scores(images, reference, {"psnr": _psnr_pair})["psnr"], reduction)


def ssim(images: Any, reference: Any, *, reduction: str | None = "mean") -> float | np.ndarray:
    """Structural similarity of each image with its reference (Wang et al. 2004).

    The SSIM map is computed by torchmetrics with the standard settings: an 11 x 11 Gaussian
    window of sigma 1.5, ``K1 = 0.01``, ``K2 = 0.03``, on RGB pixels in [0, 1]. Its mean is
    taken over the three channels and the windows that lie inside the image (pixels at least
    5 px from the border), as in the authors' code and in scikit-image's
    ``structural_similarity(..., channel_axis=-1, data_range=1, gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False)``. torchmetrics' own mean also counts the border,
    reflecting the image there, which gives a slightly different value on small images.

    Parameters
    ----------
    images, reference : images
        The same number of images, pairwise of equal size, each at least 11 x 11 px.
    reduction : {"mean", None}, default "mean"
        The mean over pairs, or None for the per-pair values.

    Returns
    -------
    float or numpy.ndarray

    Examples
    --------
    >>> import torch
    >>> images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    >>> round(ssim(images, images), 6)
    1.0
    """
    _check_reduction(reduction)
    _require_torchmetrics()
    return _reduced(_paired_scores(images, reference, {"ssim": _ssim_pair})["ssim"], reduction)


# --------------------------------------------------------------------------- LPIPS


def _unit_channels(features: Tensor) -> Tensor:
    return features / torch.sqrt(_LPIPS_EPS + features.square().sum(dim=1, keepdim=True))


def _lpips_distance(
    features: Sequence[Tensor], targets: Sequence[Tensor], weights: Sequence[Tensor] | None
) -> Tensor:
    """The LPIPS formula on feature maps: unit channel vectors, weighted squared distance,
    mean over positions, sum over layers (Zhang et al. 2018, eq. 1)."""
    total = torch.zeros((), dtype=torch.float64)
    for layer, (feature, target) in enumerate(zip(features, targets, strict=True)):
        squared = (_unit_channels(feature.double()) - _unit_channels(target.double())).square()
        if weights is not None:
            squared = squared * weights[layer].to(squared).reshape(1, -1, 1, 1)
        total = total + squared.sum(dim=1).mean().cpu()
    return total


def _feature_maps(output: Any, name: str) -> list[Tensor]:
    maps = [output] if isinstance(output, Tensor) else output
    if (
        not isinstance(maps, Sequence)
        or not maps
        or not all(isinstance(m, Tensor) and m.ndim == 4 and len(m) == 2 for m in maps)
    ):
        raise ValueError(
            "net must map an N x 3 x H x W batch to a feature map N x C x h x w or a list of "
            f"them; on {name} it returned {_describe_output(output)}"
        )
    return list(maps)


def _check_layer_weights(weights: Any, maps: list[Tensor]) -> list[Tensor] | None:
    if weights is None:
        return None
    if isinstance(weights, Tensor) or not isinstance(weights, Sequence):
        raise TypeError("layer_weights must be a list of 1-D tensors, one per feature map")
    if len(weights) != len(maps):
        raise ValueError(f"layer_weights has {len(weights)} entries but net gives {len(maps)} maps")
    checked = []
    for layer, (weight, feature) in enumerate(zip(weights, maps, strict=True)):
        weight = torch.as_tensor(weight).detach().to(torch.float64).flatten()
        if len(weight) != feature.shape[1]:
            raise ValueError(
                f"layer_weights[{layer}] has {len(weight)} values but feature map {layer} has "
                f"{feature.shape[1]} channels"
            )
        if not bool(torch.isfinite(weight).all()) or bool((weight < 0).any()):
            raise ValueError(f"layer_weights[{layer}] must be finite and non-negative")
        checked.append(weight)
    return checked


def _custom_lpips_scorer(net: Any, layer_weights: Any) -> _PairScorer:
    device = _network_device(net)

    def score(image: Tensor, target: Tensor, name: str) -> float:
        with torch.inference_mode():
            maps = _feature_maps(net(torch.stack([image, target]).to(device)), name)
        weights = _check_layer_weights(layer_weights, maps)
        return float(_lpips_distance([m[:1] for m in maps], [m[1:] for m in maps], weights))

    return score


def _default_lpips_scorer(backbone: str, device: torch.device) -> _PairScorer:
    _require_torchmetrics()
    _require("torchvision", "torchvision", f"lpips with the {backbone!r} network", "net=<network>")
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    metric = LearnedPerceptualImagePatchSimilarity(net_type=backbone, normalize=True).to(device)

    def score(image: Tensor, target: Tensor, name: str) -> float:
        # Called on one pair, a torchmetrics metric returns that pair's value.
        return float(metric(image[None].to(device), target[None].to(device)))

    return score


def _lpips_scorer(net: Any, layer_weights: Any, device: torch.device) -> _PairScorer:
    if net is None or isinstance(net, str):
        backbone = "alex" if net is None else net
        if backbone not in _LPIPS_BACKBONES:
            raise ValueError(
                f"net must be one of {_LPIPS_BACKBONES}, a network or None; got {net!r}"
            )
        if layer_weights is not None:
            raise ValueError("layer_weights applies to a network of your own, not to net=str")
        return _default_lpips_scorer(backbone, device)
    _check_network(net, "net")
    return _custom_lpips_scorer(net, layer_weights)


def lpips(
    images: Any,
    reference: Any,
    *,
    net: str | Callable | None = None,
    layer_weights: Sequence[Tensor] | None = None,
    reduction: str | None = "mean",
    device: str | torch.device = "auto",
) -> float | np.ndarray:
    """Learned perceptual image patch similarity of each image with its reference.

    LPIPS (Zhang et al. 2018) compares deep features: at every position of every layer the
    channel vectors of both images are scaled to unit length, their squared difference is
    weighted per channel and summed, averaged over positions and summed over layers.

    Parameters
    ----------
    images, reference : images
        The same number of images, pairwise of equal size.
    net : {"alex", "vgg", "squeeze"}, callable or None, default None (``"alex"``)
        A name: torchmetrics' LPIPS with that backbone and its calibrated weights (needs
        torchvision, which downloads the backbone). A network of your own: a callable mapping
        ``N x 3 x H x W`` images in [0, 1] to a feature map ``N x C x h x w`` or a list of
        them; without ``layer_weights`` every channel weighs 1 (the paper's uncalibrated
        "baseline" variant).
    layer_weights : list of Tensor, optional
        Non-negative channel weights, one 1-D tensor of length ``C_k`` per feature map of
        your ``net`` (the calibrated "lin" layers).
    reduction : {"mean", None}, default "mean"
        The mean over pairs, or None for the per-pair values.
    device : str or torch.device, default "auto"
        Where a named network runs ("auto": CUDA when available).

    Returns
    -------
    float or numpy.ndarray
        0 for identical images, larger for more different ones.

    Raises
    ------
    ModuleNotFoundError
        For a named network without torchvision (or torchmetrics).

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Conv2d(3, 8, 3)  # untrained: only to show the call
    >>> images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    >>> lpips(images, images, net=net)
    0.0
    """
    _check_reduction(reduction)
    scorer = _lpips_scorer(net, layer_weights, resolve_device(device))
    return _reduced(_paired_scores(images, reference, {"lpips": scorer})["lpips"], reduction)


# --------------------------------------------------------------------------- features


class _Precomputed(nn.Module):
    """Hands already extracted features to a torchmetrics metric as its feature network."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features  # read by torchmetrics' FID to size its state

    def forward(self, features: Tensor) -> Tensor:
        return features


def _extract_features(
    named_pixels: Iterable[tuple[str, Tensor]],
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
    for names, pixels in _same_size_batches(named_pixels, batch_size):
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
    named_pixels = _named_pixels(images, source)
    return _extract_features(
        named_pixels, network, argument=argument, source=source, batch_size=batch_size
    )


def _describe_output(output: Any) -> str:
    if isinstance(output, Tensor):
        return f"a tensor of shape {tuple(output.shape)}"
    return f"an object of type {type(output).__name__}"


def _check_enough(features: Tensor, minimum: int, name: str, metric: str, what: str) -> None:
    if len(features) < minimum:
        raise ValueError(f"{metric} needs at least {minimum} {what} in {name}; got {len(features)}")


def _seeded(random_state: Any) -> int:
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return int(random_state)
    return int(check_random_state(random_state).randint(0, 2**31 - 1))


def _compute_with_seed(metric: Any, seed: int) -> Any:
    """``metric.compute()`` with torch's CPU generator seeded, and restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return metric.compute()


def _frechet_distance(features: Tensor, reference_features: Tensor, metric: str, what: str):
    _check_enough(features, 2, "images", metric, what)
    _check_enough(reference_features, 2, "reference", metric, what)
    from torchmetrics.image.fid import FrechetInceptionDistance

    distance = FrechetInceptionDistance(feature=_Precomputed(features.shape[1]))
    distance.update(reference_features, real=True)
    distance.update(features, real=False)
    return float(distance.compute())


def _kernel_distance(
    features: Tensor,
    reference_features: Tensor,
    *,
    subsets: int,
    subset_size: int | None,
    degree: int,
    random_state: Any,
) -> float:
    _check_enough(features, 2, "images", "kid", "images")
    _check_enough(reference_features, 2, "reference", "kid", "images")
    largest = min(len(features), len(reference_features))
    if subset_size is None:
        subset_size = min(1000, largest)
    elif not 2 <= subset_size <= largest:
        raise ValueError(
            f"subset_size must be between 2 and the size of the smaller set ({largest}); "
            f"got {subset_size}"
        )
    from torchmetrics.image.kid import KernelInceptionDistance

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features")
        distance = KernelInceptionDistance(
            feature=_Precomputed(features.shape[1]),
            subsets=subsets,
            subset_size=subset_size,
            degree=degree,
        )
    distance.update(reference_features, real=True)
    distance.update(features, real=False)
    mean, _ = _compute_with_seed(distance, _seeded(random_state))
    return float(mean)


def _inception_score(logits: Tensor, *, splits: int, random_state: Any) -> float:
    if splits > len(logits):
        raise ValueError(
            f"splits must be at most the number of images ({len(logits)}); got {splits}"
        )
    from torchmetrics.image.inception import InceptionScore

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features")
        score = InceptionScore(feature=_Precomputed(logits.shape[1]), splits=splits)
    score.update(logits)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*degrees of freedom")  # std of 1 split
        mean, _ = _compute_with_seed(score, _seeded(random_state))
    return float(mean)


def _extractor(
    feature_extractor: Any, device: Any, metric: str, argument: str = "feature_extractor"
) -> Any:
    _require_torchmetrics()
    if feature_extractor is None:
        output = "logits_unbiased" if argument == "classifier" else "2048"
        return _default_inception(output, resolve_device(device), metric, argument)
    _check_network(feature_extractor, argument)
    return feature_extractor


def fid(
    images: Any,
    reference: Any,
    *,
    feature_extractor: Callable | None = None,
    batch_size: int = 16,
    device: str | torch.device = "auto",
) -> float:
    """Frechet inception distance between the features of two image sets (Heusel et al. 2017).

    The squared W2 distance between Gaussians fitted to the features of ``images`` and of
    ``reference``, computed by torchmetrics. The sets are unpaired and may differ in size.
    Fewer images than features leave the covariances singular: FID is then biased upwards,
    as it always is on small sets; see `patch_fid` for a dozen images.

    Parameters
    ----------
    images, reference : images
        At least 2 images each.
    feature_extractor : callable, optional
        Maps ``N x 3 x H x W`` images in [0, 1] to ``N x d`` features. Default: the 2048
        pool features of the FID Inception-v3 (torchmetrics, needs torch-fidelity, downloads
        the weights), which resizes every image to 299 x 299 itself.
    batch_size : int, default 16
        Images per forward pass (same-size images only).
    device : str or torch.device, default "auto"
        Where the default network runs ("auto": CUDA when available).

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If a set has fewer than 2 images, or the extractor returns the wrong shape.
    ModuleNotFoundError
        For the default network without torch-fidelity (or torchmetrics).

    Examples
    --------
    >>> import torch
    >>> pooled = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
    >>> images = torch.rand(20, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    >>> fid(images, images, feature_extractor=pooled) < 1e-6
    True
    """
    batch_size = _check_int(batch_size, "batch_size", 1)
    extractor = _extractor(feature_extractor, device, "fid")
    features = _image_features(images, "images", extractor, "feature_extractor", batch_size)
    reference_features = _image_features(
        reference, "reference", extractor, "feature_extractor", batch_size
    )
    return _frechet_distance(features, reference_features, "fid", "images")


def kid(
    images: Any,
    reference: Any,
    *,
    feature_extractor: Callable | None = None,
    subsets: int = 100,
    subset_size: int | None = None,
    degree: int = 3,
    batch_size: int = 16,
    device: str | torch.device = "auto",
    random_state: Any = None,
) -> float:
    """Kernel inception distance between the features of two image sets (Binkowski et al.).

    The unbiased estimate of the squared maximum mean discrepancy with the polynomial kernel
    ``k(x, y) = (x . y / d + 1) ** degree``, averaged over random subsets of equal size of
    both sets; computed by torchmetrics. Unlike FID it is unbiased on small sets.

    Parameters
    ----------
    images, reference : images
        At least 2 images each, unpaired.
    feature_extractor : callable, optional
        As for `fid`; default the FID Inception-v3 pool features.
    subsets : int, default 100
        Number of random subsets averaged.
    subset_size : int, optional
        Images per subset, from each set; default ``min(1000, n_images, n_reference)``.
        When it equals both set sizes every subset is the whole set and the result is exact.
    degree : int, default 3
        Degree of the polynomial kernel.
    batch_size : int, default 16
    device : str or torch.device, default "auto"
    random_state : int, RandomState instance or None, default None
        Seeds the subsets; torch's global generator is left as it was.

    Returns
    -------
    float
        The mean over subsets (it can be slightly negative when the sets match).

    Examples
    --------
    >>> import torch
    >>> pooled = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
    >>> images = torch.rand(10, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    >>> same = kid(images, images, feature_extractor=pooled)
    >>> darker = kid(images, 0.5 * images, feature_extractor=pooled)
    >>> darker > 10 * abs(same)
    True
    """
    batch_size = _check_int(batch_size, "batch_size", 1)
    subsets = _check_int(subsets, "subsets", 1)
    degree = _check_int(degree, "degree", 1)
    if subset_size is not None:
        subset_size = _check_int(subset_size, "subset_size", 2)
    extractor = _extractor(feature_extractor, device, "kid")
    features = _image_features(images, "images", extractor, "feature_extractor", batch_size)
    reference_features = _image_features(
        reference, "reference", extractor, "feature_extractor", batch_size
    )
    return _kernel_distance(
        features,
        reference_features,
        subsets=subsets,
        subset_size=subset_size,
        degree=degree,
        random_state=random_state,
    )


def inception_score(
    images: Any,
    *,
    classifier: Callable | None = None,
    splits: int = 10,
    batch_size: int = 16,
    device: str | torch.device = "auto",
    random_state: Any = None,
) -> float:
    """Inception score of an image set (Salimans et al. 2016), by torchmetrics.

    ``exp(E_x KL(p(y|x) || p(y)))`` with ``p(y|x)`` the softmax of the classifier's logits
    and ``p(y)`` their mean, computed on each of ``splits`` random groups of the images and
    averaged. Higher is better; it needs no reference.

    Parameters
    ----------
    images : images
    classifier : callable, optional
        Maps ``N x 3 x H x W`` images in [0, 1] to ``N x n_classes`` logits. Default: the
        FID Inception-v3's 1008 logits (torchmetrics, needs torch-fidelity).
    splits : int, default 10
        Number of groups, at most the number of images. The images are shuffled and cut by
        ``torch.chunk``, which makes fewer groups when they do not divide evenly.
    batch_size : int, default 16
    device : str or torch.device, default "auto"
    random_state : int, RandomState instance or None, default None
        Seeds the shuffle; torch's global generator is left as it was.

    Returns
    -------
    float
        The mean over groups, between 1 and ``n_classes``.

    Examples
    --------
    >>> import torch
    >>> confident = lambda images: 100 * torch.eye(4)[: len(images)]  # one class per image
    >>> round(inception_score(torch.rand(4, 3, 8, 8), classifier=confident, splits=1), 6)
    4.0
    """
    batch_size = _check_int(batch_size, "batch_size", 1)
    splits = _check_int(splits, "splits", 1)
    network = _extractor(classifier, device, "inception_score", argument="classifier")
    logits = _image_features(images, "images", network, "classifier", batch_size)
    return _inception_score(logits, splits=splits, random_state=random_state)


# --------------------------------------------------------------------------- patch FID


def _crop_corners(
    height: int, width: int, crop_size: int, crops_per_image: int | None, rng: Any
) -> list[tuple[int, int]]:
    if crops_per_image is None:  # the grid of non-overlapping tiles, from the top left
        rows = range(0, height - crop_size + 1, crop_size)
        cols = range(0, width - crop_size + 1, crop_size)
        return list(itertools.product(rows, cols))
    tops = rng.randint(0, height - crop_size + 1, size=crops_per_image)
    lefts = rng.randint(0, width - crop_size + 1, size=crops_per_image)
    return list(zip(tops.tolist(), lefts.tolist(), strict=True))


def _crops(
    images: Any, name: str, crop_size: int, crops_per_image: int | None, rng: Any
) -> Iterator[tuple[str, Tensor]]:
    for item in ImageSource(images, name=name):
        height, width = item.pixels.shape[-2:]
        if min(height, width) < crop_size:
            raise ValueError(
                f"{item.name} is {height} x {width} px, smaller than crop_size={crop_size}"
            )
        for top, left in _crop_corners(height, width, crop_size, crops_per_image, rng):
            yield item.name, item.pixels[:, top : top + crop_size, left : left + crop_size]


def _crop_features(images, source, extractor, crop_size, crops_per_image, rng, batch_size):
    crops = _crops(images, source, crop_size, crops_per_image, rng)
    return _extract_features(
        crops, extractor, argument="feature_extractor", source=source, batch_size=batch_size
    )


def patch_fid(
    images: Any,
    reference: Any,
    *,
    crop_size: int = 64,
    crops_per_image: int | None = None,
    feature_extractor: Callable | None = None,
    batch_size: int = 64,
    device: str | torch.device = "auto",
    random_state: Any = None,
) -> float:
    """FID between crops of two image sets: FID that means something on a dozen images.

    FID needs many more samples than a small evaluation set has; cutting every image into
    many crops gives them (as in the evaluations of small image sets in restoration papers).
    Both sets are cut the same way and the crops are compared as in `fid`.

    Parameters
    ----------
    images, reference : images
        Unpaired; every image at least ``crop_size`` px on each side.
    crop_size : int, default 64
        Side of the square crops, in pixels.
    crops_per_image : int, optional
        None: every non-overlapping ``crop_size`` tile of the grid from the top-left corner
        (deterministic). An int: that many crops at uniformly random positions per image.
    feature_extractor : callable, optional
        As for `fid`; the default Inception-v3 upsamples each crop to 299 x 299.
    batch_size : int, default 64
        Crops per forward pass.
    device : str or torch.device, default "auto"
    random_state : int, RandomState instance or None, default None
        Seeds the random crop positions.

    Returns
    -------
    float

    Examples
    --------
    >>> import torch
    >>> pooled = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
    >>> images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> patch_fid(images, images, crop_size=8, feature_extractor=pooled) < 1e-6  # 32 crops
    True
    """
    crop_size = _check_int(crop_size, "crop_size", 1)
    if crops_per_image is not None:
        crops_per_image = _check_int(crops_per_image, "crops_per_image", 1)
    batch_size = _check_int(batch_size, "batch_size", 1)
    extractor = _extractor(feature_extractor, device, "patch_fid")
    rng = check_random_state(random_state)
    features, reference_features = (
        _crop_features(source, name, extractor, crop_size, crops_per_image, rng, batch_size)
        for source, name in ((images, "images"), (reference, "reference"))
    )
    return _frechet_distance(features, reference_features, "patch_fid", "crops")


# --------------------------------------------------------------------------- latent W2


def _latent_patch_stats(
    images: Any, name: str, autoencoder: Autoencoder, patch_size: int, batch_size: int
) -> GaussianStats:
    stats = None
    for names, pixels in _same_size_batches(_named_pixels(images, name), batch_size):
        label = batch_name(names)
        padded = pad_to_multiple(pixels.to(autoencoder.device), autoencoder.factor, name=label)
        latents = autoencoder.encode(padded)
        if min(latents.shape[-2:]) < patch_size:
            raise ValueError(
                f"{label}: its latent is {_size(latents)}, smaller than patch_size="
                f"{patch_size}; images must be at least {patch_size * autoencoder.factor} px "
                f"on each side for {autoencoder.name}"
            )
        if stats is None:
            stats = GaussianStats(latents.shape[1] * patch_size**2, device=latents.device)
        for chunk in iter_patch_chunks(latents, patch_size, max_patches=16384):
            stats.update(chunk)
    if stats is None:
        raise ValueError(f"{name} is empty: expected at least one image")
    if stats.count < 2:
        raise ValueError(f"{name} gives {stats.count} latent patch; latent_w2 needs at least 2")
    return stats


def latent_w2(
    images: Any,
    reference: Any,
    autoencoder: Any,
    *,
    patch_size: int = 3,
    batch_size: int = 4,
    device: str | torch.device = "auto",
) -> float:
    """W2 distance between the Gaussians of the latent patches of two image sets.

    Both sets are encoded (padded by reflection to the autoencoder's factor), every
    overlapping ``C x p x p`` latent patch is a sample, and the Gaussians fitted to the two
    sets' patches are compared in closed form. This is the distance that
    `latent_ot.LatentOTTransformer` closes (its ``w2_`` after fitting on the same sets), so
    it measures how far restored images still are from natural ones where the transport
    acts. Not squared, unlike FID.

    Parameters
    ----------
    images, reference : images
        Unpaired sets.
    autoencoder : Autoencoder, str, os.PathLike or diffusers model
        An `latent_ot.autoencoders.Autoencoder`, used where it is, or anything
        `latent_ot.autoencoders.load_autoencoder` accepts ("pixel", a preset name, a
        directory, a diffusers model), loaded on ``device``.
    patch_size : int, default 3
        Side ``p`` of the latent patches.
    batch_size : int, default 4
        Images per encoder pass (same-size images only).
    device : str or torch.device, default "auto"
        Where an autoencoder given by name runs ("auto": CUDA when available).

    Returns
    -------
    float

    Examples
    --------
    >>> import torch
    >>> images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    >>> latent_w2(images, images, "pixel") < 1e-6
    True
    """
    patch_size = _check_int(patch_size, "patch_size", 1)
    batch_size = _check_int(batch_size, "batch_size", 1)
    if not isinstance(autoencoder, Autoencoder):
        autoencoder = load_autoencoder(autoencoder, device=resolve_device(device))
    stats = _latent_patch_stats(images, "images", autoencoder, patch_size, batch_size)
    reference_stats = _latent_patch_stats(
        reference, "reference", autoencoder, patch_size, batch_size
    )
    reference_stats.to(stats.device)
    distance = w2_distance(
        stats.mean, stats.covariance, reference_stats.mean, reference_stats.covariance
    )
    return float(distance)


# --------------------------------------------------------------------------- evaluate


def _requested_metrics(metrics: Any, autoencoder: Any) -> tuple[list[str], bool]:
    """The metric names to compute, and whether the caller named them."""
    if metrics is None:
        defaults = [*DEFAULT_METRICS, *(["latent_w2"] if autoencoder is not None else [])]
        return defaults, False
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    unknown = [name for name in names if name not in METRICS]
    if unknown or not names:
        raise ValueError(
            f"metrics: unknown or no names {unknown}; expected some of {', '.join(METRICS)}"
        )
    if "latent_w2" in names and autoencoder is None:
        raise ValueError("metrics: latent_w2 needs an autoencoder (autoencoder=...)")
    return list(dict.fromkeys(names)), True


class _EvaluationNetworks:
    """Builds the networks `evaluate` needs, skipping metrics whose default is unavailable.

    When the caller left the metrics to the defaults, a network that cannot be built (a
    missing package, weights that cannot be downloaded) drops the metrics that need it from
    ``requested``, with a warning; metrics the caller named fail with the original error.
    """

    def __init__(self, requested: list[str], named: bool) -> None:
        self.requested = requested
        self.named = named

    def build(self, metrics: list[str], build: Callable[[], Any]) -> Any:
        needed_by = [metric for metric in metrics if metric in self.requested]
        if not needed_by:
            return None
        try:
            return build()
        except (ImportError, OSError) as err:
            if self.named:
                raise
            warnings.warn(f"evaluate: skipping {', '.join(needed_by)}: {err}", stacklevel=3)
            for metric in needed_by:
                self.requested.remove(metric)
            return None


def evaluate(
    images: Any,
    reference: Any,
    *,
    metrics: Sequence[str] | None = None,
    feature_extractor: Callable | None = None,
    classifier: Callable | None = None,
    lpips_net: str | Callable | None = None,
    autoencoder: Any = None,
    patch_size: int = 3,
    crop_size: int = 64,
    crops_per_image: int | None = None,
    batch_size: int = 16,
    device: str | torch.device = "auto",
    random_state: Any = None,
) -> dict[str, float]:
    """A table of metrics of restored images against their references, in one call.

    Paired metrics (psnr, ssim, lpips) compare ``images[i]`` with ``reference[i]``; the
    others compare the two sets as distributions. Each network runs once per image: fid and
    kid share one pass of ``feature_extractor``.

    Parameters
    ----------
    images, reference : images
        Restored images and their clean references. Iterated several times: pass a list,
        a batch or a directory rather than a generator.
    metrics : sequence of str, optional
        Names from `METRICS`: "psnr", "ssim", "lpips", "fid", "kid", "is", "patch_fid",
        "latent_w2". Named metrics fail loudly when their default network is unavailable.
        None: `DEFAULT_METRICS` plus "latent_w2" given an ``autoencoder``; a metric whose
        default network cannot be built (torch-fidelity or torchvision missing, weights not
        downloadable) is then left out of the table, with a warning.
    feature_extractor : callable, optional
        For fid, kid and patch_fid (see `fid`).
    classifier : callable, optional
        For is (see `inception_score`).
    lpips_net : str or callable, optional
        For lpips (see `lpips`, argument ``net``).
    autoencoder : optional
        For latent_w2 (see `latent_w2`).
    patch_size : int, default 3
        Latent patch size of latent_w2.
    crop_size, crops_per_image : optional
        Crops of patch_fid (see `patch_fid`).
    batch_size : int, default 16
    device : str or torch.device, default "auto"
        Where default networks and an autoencoder given by name run.
    random_state : int, RandomState instance or None, default None
        Seeds kid's subsets, the is shuffle and random patch_fid crops. Pass an int to compare
        tables, for instance along a sweep of alphas.

    Returns
    -------
    dict of str to float
        Metric name to value, in the order of ``metrics``. psnr, ssim and lpips are means over
        pairs; kid uses 100 subsets of ``min(1000, n_images, n_reference)`` images; is uses
        ``min(10, max(1, n_images // 100))`` splits, so that every split holds at least 100
        images (10 splits from 1000 images on, the usual protocol), or all the images.

    Examples
    --------
    >>> import torch
    >>> pooled = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
    >>> reference = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    >>> table = evaluate(reference * 0.9, reference, metrics=["psnr", "fid"],
    ...                  feature_extractor=pooled)
    >>> sorted(table)
    ['fid', 'psnr']
    """
    requested, named = _requested_metrics(metrics, autoencoder)
    batch_size = _check_int(batch_size, "batch_size", 1)
    device = resolve_device(device)
    _require_torchmetrics()
    networks = _EvaluationNetworks(requested, named)
    lpips_scorer = networks.build(["lpips"], lambda: _lpips_scorer(lpips_net, None, device))
    extractor = networks.build(
        ["fid", "kid", "patch_fid"],
        lambda: _extractor(feature_extractor, device, "fid, kid and patch_fid"),
    )
    inception = networks.build(
        ["is"], lambda: _extractor(classifier, device, "inception_score", argument="classifier")
    )

    results: dict[str, float] = {}
    scorers = {"psnr": _psnr_pair, "ssim": _ssim_pair, "lpips": lpips_scorer}
    scorers = {metric: scorers[metric] for metric in _PAIRED_METRICS if metric in requested}
    if scorers:
        for metric, scores in _paired_scores(images, reference, scorers).items():
            results[metric] = float(scores.mean())
    if "fid" in requested or "kid" in requested:
        features, reference_features = (
            _image_features(source, name, extractor, "feature_extractor", batch_size)
            for source, name in ((images, "images"), (reference, "reference"))
        )
        if "fid" in requested:
            results["fid"] = _frechet_distance(features, reference_features, "fid", "images")
        if "kid" in requested:
            results["kid"] = _kernel_distance(
                features,
                reference_features,
                subsets=100,
                subset_size=None,
                degree=3,
                random_state=random_state,
            )
    if "patch_fid" in requested:
        results["patch_fid"] = patch_fid(
            images,
            reference,
            crop_size=crop_size,
            crops_per_image=crops_per_image,
            feature_extractor=extractor,
            batch_size=batch_size,
            random_state=random_state,
        )
    if "is" in requested:
        logits = _image_features(images, "images", inception, "classifier", batch_size)
        splits = min(10, max(1, len(logits) // _IS_SPLIT_SIZE))
        results["is"] = _inception_score(logits, splits=splits, random_state=random_state)
    if "latent_w2" in requested:
        results["latent_w2"] = latent_w2(
            images, reference, autoencoder, patch_size=patch_size, device=device
        )
    return {metric: results[metric] for metric in requested}
