"""The measures of ``quality.py`` and its summary numbers.

- `MobileNetEmbedding`: the MobileNet-v1 embedding network of ``shared/features/coral``
  (TFLite, run by ``ai-edge-litert``) as a feature extractor for `latent_ot.metrics.fid` and
  `latent_ot.metrics.kid`: perceptual surrogates, never comparable with published FID/KID;
- `RDNFeatures`: a second feature network that nothing here was tuned on, the deep features
  of UpscalerJS's RDN x2 (``shared/models/upscalerjs-esrgan-medium``), pooled;
- `Brisque`: the no-reference BRISQUE score of the ``brisque`` package, which ships its
  trained SVR model (``brisque/models/svm.txt``, LIVE database) and downloads nothing;
- `inception_status`: whether the real FID Inception-v3 (torch-fidelity and its weights) is
  here, without downloading it;
- `latent_ot.metrics.latent_grid_score`: the 8-pixel latent grid's trace in the spectrum;
- `measure` computes one row of the table, `summary_numbers` the numbers of a sweep.

The packages are imported when a measure is built, so that this module imports without them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _quality_tasks import all_crops
from PIL import Image

from latent_ot import metrics

EMBEDDING_MODEL = (
    Path("features") / "coral" / "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"
)
# torch-fidelity's FID Inception-v3 weights, as torch.hub caches them.
INCEPTION_WEIGHTS = "weights-inception-2015-12-05-*.pth"
KID_SUBSETS = 50
# The second judge: the RDN x2's features after its first three residual dense blocks.
RDN_MODEL = Path("models") / "upscalerjs-esrgan-medium" / "models" / "x2" / "model.json"
RDN_LAYER = "LRL_3"


class _PixelCache:
    """Features cached by an image's pixels: the clean reference crops are embedded once
    for all alphas and both metrics."""

    def __init__(self) -> None:
        self._cache: dict[bytes, np.ndarray] = {}

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        pixels = (images.detach().cpu().clamp(0, 1) * 255).round().byte()
        rows = [self._cached(image.permute(1, 2, 0).contiguous().numpy()) for image in pixels]
        return torch.from_numpy(np.stack(rows))

    def _cached(self, pixels: np.ndarray) -> np.ndarray:
        key = hashlib.blake2b(pixels.tobytes(), digest_size=16).digest() + bytes(
            str(pixels.shape), "ascii"
        )
        if key not in self._cache:
            self._cache[key] = self._embed(pixels)
        return self._cache[key]

    def _embed(self, pixels: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class MobileNetEmbedding(_PixelCache):
    """``N x 3 x H x W`` images in [0, 1] to ``N x 1024`` MobileNet-v1 embeddings.

    Each image is resized to 224 x 224 (bilinear, antialiased: Pillow) and fed as uint8, as
    the quantized network expects; the uint8 output is de-quantized with the output tensor's
    scale and zero point. Embeddings are cached by the image's pixels: the clean reference
    crops are embedded once for all alphas and both metrics.

    Parameters
    ----------
    model_path : Path
        The ``.tflite`` file.
    num_threads : int, default 1
        Threads of the TFLite interpreter.
    """

    def __init__(self, model_path: Path, num_threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter

        super().__init__()
        self._interpreter = Interpreter(model_path=str(model_path), num_threads=num_threads)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        self._side = int(self._input["shape"][1])

    def _embed(self, pixels: np.ndarray) -> np.ndarray:
        resized = Image.fromarray(pixels).resize(
            (self._side, self._side), Image.Resampling.BILINEAR
        )
        self._interpreter.set_tensor(self._input["index"], np.asarray(resized)[None])
        self._interpreter.invoke()
        quantized = self._interpreter.get_tensor(self._output["index"]).reshape(-1)
        scale, zero = self._output["quantization"]
        return (quantized.astype(np.float64) - zero) * scale


class RDNFeatures(_PixelCache):
    """``N x 3 x H x W`` images in [0, 1] to ``N x 128`` pooled RDN features.

    The second judge, one that no option or default here was chosen on: the features of
    UpscalerJS's RDN x2 (C1 D10 G64, trained for super-resolution on DIV2K; pixels in
    0..255) after its shallow layers and first three residual dense blocks (layer
    ``LRL_3``: 64 channels at the input's resolution, a receptive field of 11 px), averaged
    over space, with their standard deviations over space: 128 numbers per image, a
    learned texture descriptor. Run at the image's own resolution, never resized, they see
    the pixel-scale structure (edges, textures, periodic patterns) that MobileNet's 224 px
    resize blurs; they share nothing with TAEF2, in whose latent space the transport runs,
    nor with MobileNet. Three blocks, not the whole body (``FDF``, ten), keep its cost
    within the benchmark's budget. The RDN x4 restorer of the learned x4 task is a
    sibling network (same architecture, other weights).

    Parameters
    ----------
    model_json : Path
        The RDN x2's ``model.json``.
    crop : int, optional
        Embed only the central ``crop`` px square of each image (the whole image when None
        or larger): the network's cost grows with the pixels, and the pooled statistics of
        a smaller center are a noisier estimate of the same thing.
    """

    def __init__(self, model_json: Path, crop: int | None = None) -> None:
        from _learned_sr import LayersModel

        super().__init__()
        self._model = LayersModel(model_json)
        self._crop = crop

    def _embed(self, pixels: np.ndarray) -> np.ndarray:
        if self._crop is not None:
            height, width = pixels.shape[:2]
            top, left = max(height - self._crop, 0) // 2, max(width - self._crop, 0) // 2
            pixels = pixels[top : top + self._crop, left : left + self._crop]
        with torch.inference_mode():
            x = torch.from_numpy(np.array(pixels)).permute(2, 0, 1)[None].float()
            features = self._model(x, RDN_LAYER)[0].double().flatten(1)
        return torch.cat([features.mean(1), features.std(1)]).numpy()


class Brisque:
    """BRISQUE (Mittal et al. 2012) of an RGB uint8 image: lower is more natural.

    What it measures: how far the statistics of locally normalised luminance (MSCN
    coefficients and their neighbour products, at two scales) are from those of pristine
    photos, mapped to a quality score by an SVR trained on the LIVE database's human
    ratings of JPEG, JPEG2000, noise, blur and fast-fading distortions. Scores run from
    about 0 (pristine) to 100; very smooth images can score below 0.
    """

    def __init__(self) -> None:
        with warnings.catch_warnings():  # it imports scipy.ndimage.filters, deprecated
            warnings.simplefilter("ignore", DeprecationWarning)
            from brisque import BRISQUE

        self._model = BRISQUE(url=False)
        # brisque 0.2.0 calls float() on 1-element arrays, an error from numpy 2.4 on.
        self._model.scale_features = self._scale_features

    def _scale_features(self, features: Sequence[Any]) -> np.ndarray:
        def flat(values: Sequence[Any]) -> np.ndarray:
            return np.array([np.ravel(value)[0] for value in values], dtype=np.float64)

        low, high = flat(self._model.scale_params["min_"]), flat(self._model.scale_params["max_"])
        return -1 + 2.0 * (flat(features) - low) / (high - low)

    def __call__(self, image: np.ndarray) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return float(self._model.score(image))


def inception_status() -> str | None:
    """None when the real FID/KID can run offline, else why not."""
    if importlib.util.find_spec("torch_fidelity") is None:
        return "torch-fidelity is not installed"
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    if not any(checkpoints.glob(INCEPTION_WEIGHTS)):
        return f"torch-fidelity's Inception weights ({INCEPTION_WEIGHTS}) are not in {checkpoints}"
    return None


def measure(
    outputs: Sequence[np.ndarray],
    clean: Sequence[np.ndarray],
    *,
    extractors: Mapping[str, Any],
    brisque: Brisque | None,
    crop_size: int,
    inception: bool,
    seed: int,
) -> dict[str, float]:
    """PSNR and `ssim` against ``clean``; the mean latent-grid score (``grid``); FD, KID
    (`distribution_measures`) and BRISQUE.

    A measure whose package is not installed is left out of the row.
    """
    row = {
        "psnr": metrics.psnr(outputs, clean),
        "ssim": ssim(outputs, clean),
        "grid": float(np.mean([metrics.latent_grid_score(image) for image in outputs])),
    }
    row.update(
        distribution_measures(
            outputs,
            clean,
            extractors=extractors,
            inception=inception,
            crop_size=crop_size,
            seed=seed,
        )
    )
    if brisque is not None:
        row["brisque"] = float(np.mean([brisque(image) for image in outputs]))
    return row


def ssim(images: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> float:
    """Mean SSIM of RGB uint8 pairs, by scikit-image, as `latent_ot.metrics.ssim` defines it.

    The same definition (11 x 11 Gaussian window of std 1.5, population statistics, the mean
    over the windows inside the image and over channels; tests/test_quality_benchmark.py
    checks the two agree to float32 precision, in which latent_ot computes), in float64.
    """
    from skimage.metrics import structural_similarity

    return float(
        np.mean(
            [
                structural_similarity(
                    image,
                    target,
                    channel_axis=-1,
                    data_range=255,
                    gaussian_weights=True,
                    sigma=1.5,
                    use_sample_covariance=False,
                )
                for image, target in zip(images, reference, strict=True)
            ]
        )
    )


def distribution_measures(
    outputs: Sequence[np.ndarray],
    clean: Sequence[np.ndarray],
    *,
    extractors: Mapping[str, Any],
    inception: bool,
    crop_size: int,
    seed: int,
) -> dict[str, float]:
    """FD and KID of ``crop_size`` crops of ``outputs`` against crops of ``clean`` images,
    in the features of each of ``extractors`` (name -> network; columns ``fd_<name>``,
    ``kid_<name>``) and of the real Inception-v3 if ``inception``, unpaired: the outputs of
    the even-numbered images against the clean odd-numbered ones, and the other way round,
    averaged.

    Against their own clean versions, the crops of a restoration would sit next to their
    pair in feature space, and KID's unbiased estimate, which counts the cross pairs but
    not the pairs within a set, comes out negative on a few dozen crops. NaN when a half
    has fewer than 2 crops.
    """
    networks: dict[str, Any] = {f"_{name}": network for name, network in extractors.items()}
    if inception:
        networks[""] = None  # latent_ot.metrics' default network: the FID Inception-v3
    row = {}
    for suffix, network in networks.items():
        fd_name = "fid" if suffix == "" else "fd"
        values = [
            _fd_kid(outputs[mine::2], clean[other::2], network, crop_size, seed)
            for mine, other in ((0, 1), (1, 0))
        ]
        row[f"{fd_name}{suffix}"] = float(np.mean([fd for fd, _ in values]))
        row[f"kid{suffix}"] = float(np.mean([kid for _, kid in values]))
    return row


def _fd_kid(outputs, clean, network, crop_size: int, seed: int) -> tuple[float, float]:
    crops, reference = all_crops(outputs, crop_size), all_crops(clean, crop_size)
    if min(len(crops), len(reference)) < 2:
        return math.nan, math.nan
    options = {"feature_extractor": network, "device": "cpu"}
    return (
        metrics.fid(crops, reference, **options),
        metrics.kid(crops, reference, subsets=KID_SUBSETS, random_state=seed, **options),
    )


def summary_numbers(
    rows: Sequence[Mapping[str, float]],
    *,
    kid: str = "kid_mobilenet",
    clean_kid: float = math.nan,
    tolerance_db: float = 1.0,
) -> dict[str, float]:
    """The two numbers of a sweep, and what they are made of.

    ``kid_drop_pct``: the KID drop at the best alpha within ``tolerance_db`` of the
    restorer's PSNR (the ``alpha = 1`` row; the best alpha is the lowest KID among the rows
    whose PSNR is at least the restorer's minus ``tolerance_db``, the restorer included),
    in % of the restorer's KID (NaN unless that KID is positive). ``psnr_loss_at_0``: the
    restorer's PSNR minus the PSNR at ``alpha = 0``. ``kid_excess_drop_pct``: the same drop
    in % of the restorer's excess over ``clean_kid``, the KID of clean images, which is not
    0 on a few dozen crops of different images (NaN unless the excess is positive).

    Examples
    --------
    >>> rows = [
    ...     {"alpha": 0.0, "psnr": 25.0, "kid_mobilenet": 0.2},
    ...     {"alpha": 0.5, "psnr": 26.5, "kid_mobilenet": 0.5},
    ...     {"alpha": 1.0, "psnr": 27.0, "kid_mobilenet": 1.0},
    ... ]
    >>> numbers = summary_numbers(rows, clean_kid=0.5)
    >>> numbers["best_alpha"], numbers["kid_drop_pct"], numbers["psnr_loss_at_0"]
    (0.5, 50.0, 2.0)
    >>> numbers["kid_excess_drop_pct"]
    100.0
    """
    by_alpha = {row["alpha"]: row for row in rows}
    if 1.0 not in by_alpha or 0.0 not in by_alpha:
        raise ValueError(f"rows must hold alpha = 0 and alpha = 1; got alphas {sorted(by_alpha)}")
    restorer = by_alpha[1.0]
    near = [row for row in rows if row["psnr"] >= restorer["psnr"] - tolerance_db]
    finite = [row for row in near if math.isfinite(row[kid])]
    best = min(finite, key=lambda row: row[kid]) if finite else restorer
    drop = restorer[kid] - best[kid]
    excess = restorer[kid] - clean_kid
    return {
        "restorer_psnr": restorer["psnr"],
        "restorer_kid": restorer[kid],
        "best_alpha": best["alpha"],
        "best_psnr": best["psnr"],
        "best_kid": best[kid],
        "kid_drop_pct": 100.0 * drop / restorer[kid] if restorer[kid] > 0 else math.nan,
        "kid_excess_drop_pct": 100.0 * drop / excess if excess > 0 else math.nan,
        "psnr_loss_at_0": restorer["psnr"] - by_alpha[0.0]["psnr"],
        "kid_at_0": by_alpha[0.0][kid],
    }


def judge_numbers(
    rows: Sequence[Mapping[str, float]], best_alpha: float, default_alpha: float
) -> dict[str, float]:
    """What the judges that nothing was tuned on say about a sweep.

    ``grid_restorer``, ``grid_best``, ``grid_at_0``, ``grid_at_default``: the mean
    latent-grid score at ``alpha = 1``, at ``best_alpha`` (MobileNet's pick within 1 dB), 0
    and ``default_alpha`` (NaN where the sweep lacks it). ``rdn_kid_change_best_pct`` and
    ``rdn_kid_change_at_0_pct``: the RDN features' KID at ``best_alpha`` and at 0, in % of the
    restorer's, minus 100 (negative: more natural than the restorer); NaN without them.

    Examples
    --------
    >>> rows = [
    ...     {"alpha": 0.0, "grid": 1.3, "kid_rdn": 0.3},
    ...     {"alpha": 0.5, "grid": 1.1, "kid_rdn": 0.15},
    ...     {"alpha": 1.0, "grid": 1.0, "kid_rdn": 0.2},
    ... ]
    >>> numbers = judge_numbers(rows, best_alpha=0.5, default_alpha=0.0)
    >>> numbers["rdn_kid_change_best_pct"], numbers["rdn_kid_change_at_0_pct"]
    (-25.0, 50.0)
    >>> numbers["grid_at_default"], numbers["grid_best"]
    (1.3, 1.1)
    """
    by_alpha = {row["alpha"]: row for row in rows}
    nan_row: dict[str, float] = {}

    def at(alpha: float, name: str) -> float:
        return float(by_alpha.get(alpha, nan_row).get(name, math.nan))

    numbers = {
        "grid_restorer": at(1.0, "grid"),
        "grid_best": at(best_alpha, "grid"),
        "grid_at_0": at(0.0, "grid"),
        "grid_at_default": at(default_alpha, "grid"),
    }
    restorer = at(1.0, "kid_rdn")
    for label, alpha in (("best", best_alpha), ("at_0", 0.0)):
        change = 100.0 * at(alpha, "kid_rdn") / restorer - 100.0 if restorer > 0 else math.nan
        numbers[f"rdn_kid_change_{label}_pct"] = change
    return numbers
