"""Metrics against independent references: scikit-image, scipy and numpy formulas, and the
package's own Gaussian statistics. Every network is a small seeded one: nothing downloads."""

import sys
import types
from typing import ClassVar

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch import nn

from latent_ot import LatentOTTransformer
from latent_ot.autoencoders import load_autoencoder
from latent_ot.exceptions import MetricSkippedWarning
from latent_ot.gaussian import w2_distance
from latent_ot.metrics import (
    DEFAULT_METRICS,
    evaluate,
    fid,
    inception_score,
    kid,
    latent_w2,
    lpips,
    patch_fid,
    psnr,
    ssim,
)
from latent_ot.patches import extract_patches
from latent_ot.pipeline import pad_to_multiple
from latent_ot.stats import GaussianStats

pytest.importorskip("torchmetrics")


def _seeded(module: nn.Module, seed: int) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(0.5 * torch.randn(parameter.shape, generator=generator))
    return module.eval()


def small_extractor() -> nn.Module:
    """A fixed random conv net with global average pooling: 3 x H x W -> 24 features.

    tanh rather than ReLU: no dead feature, so the covariances of a few dozen images have
    full rank and scipy's matrix square root stays accurate."""
    return _seeded(
        nn.Sequential(
            nn.Conv2d(3, 12, 3, padding=1),
            nn.Tanh(),
            nn.Conv2d(12, 24, 3, stride=2),
            nn.Tanh(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        ),
        seed=0,
    )


class SmallClassifier(nn.Module):
    """Pooled centred colours -> 5 class logits, confident enough to give IS well above 1."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = _seeded(nn.Linear(12, 5, bias=False), seed=1)

    def forward(self, images):
        return 30 * self.linear(nn.functional.adaptive_avg_pool2d(images - 0.5, 2).flatten(1))


def small_classifier() -> nn.Module:
    return SmallClassifier().eval()


class TwoLayerNet(nn.Module):
    """Feature maps at two scales, as LPIPS backbones give."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Conv2d(3, 6, 3, padding=1)
        self.second = nn.Conv2d(6, 10, 3, stride=2)
        _seeded(self, seed=2)

    def forward(self, images):
        first = torch.relu(self.first(images))
        return first, torch.relu(self.second(first))


def noise_images(count, size=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, 3, size, size, generator=generator)


def smooth_images(count, size=16, seed=1):
    """Low-pass noise: a distribution different from `noise_images`."""
    coarse = torch.rand(
        count, 3, size // 4, size // 4, generator=torch.Generator().manual_seed(seed)
    )
    return nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")


def features_of(images, network=None):
    network = network or small_extractor()
    with torch.no_grad():
        return network(torch.stack(list(images))).double().numpy()


def frechet_reference(features, reference_features):
    """FID by the textbook: numpy moments and scipy's matrix square root."""
    mean_a, mean_b = features.mean(0), reference_features.mean(0)
    cov_a, cov_b = np.cov(features, rowvar=False), np.cov(reference_features, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a + cov_b - 2 * root))


# --------------------------------------------------------------------------- PSNR and SSIM


def uint8_pairs():
    """Three pairs of uint8 H x W x 3 arrays, of a different size for every pair."""
    rng = np.random.default_rng(0)
    pairs = []
    for height, width in ((16, 20), (24, 13), (12, 12)):
        clean = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        noisy = np.clip(clean + rng.normal(0, 20, clean.shape), 0, 255).astype(np.uint8)
        pairs.append((noisy, clean))
    return [noisy for noisy, _ in pairs], [clean for _, clean in pairs]


def test_psnr_matches_scikit_image_pair_by_pair():
    images, reference = uint8_pairs()
    expected = [
        peak_signal_noise_ratio(clean / 255, noisy / 255, data_range=1.0)
        for noisy, clean in zip(images, reference, strict=True)
    ]
    per_pair = psnr(images, reference, reduction=None)
    np.testing.assert_allclose(per_pair, expected, rtol=1e-6)
    assert psnr(images, reference) == pytest.approx(np.mean(expected), rel=1e-6)


def test_ssim_matches_scikit_image_gaussian_window():
    images, reference = uint8_pairs()
    expected = [
        structural_similarity(
            noisy / 255,
            clean / 255,
            channel_axis=-1,
            data_range=1.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        for noisy, clean in zip(images, reference, strict=True)
    ]
    np.testing.assert_allclose(ssim(images, reference, reduction=None), expected, atol=1e-3)
    assert ssim(images, reference) == pytest.approx(np.mean(expected), abs=1e-3)


def test_paired_metrics_read_a_directory_like_a_tensor(tmp_path):
    images, reference = noise_images(3), smooth_images(3)
    for index, image in enumerate(images):
        array = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(array).save(tmp_path / f"{index}.png")
    quantized = torch.stack(
        [torch.from_numpy(np.array(Image.open(tmp_path / f"{i}.png"))) for i in range(3)]
    )
    as_tensor = quantized.permute(0, 3, 1, 2).float() / 255
    assert psnr(tmp_path, reference) == pytest.approx(psnr(as_tensor, reference), rel=1e-12)
    assert ssim(str(tmp_path), reference) == pytest.approx(ssim(as_tensor, reference), rel=1e-12)


def test_identical_images_give_infinite_psnr_and_unit_ssim():
    images = noise_images(2)
    assert psnr(images, images) == np.inf
    assert ssim(images, images) == pytest.approx(1.0, abs=1e-9)


# --------------------------------------------------------------------------- LPIPS


def lpips_reference(first, second, weights=None):
    """The LPIPS formula in numpy on lists of C x h x w feature maps of one pair."""
    total = 0.0
    for layer, (a, b) in enumerate(zip(first, second, strict=True)):
        a, b = a.double().numpy(), b.double().numpy()
        unit_a = a / np.sqrt(1e-8 + (a**2).sum(0, keepdims=True))
        unit_b = b / np.sqrt(1e-8 + (b**2).sum(0, keepdims=True))
        squared = (unit_a - unit_b) ** 2
        if weights is not None:
            squared = squared * weights[layer].numpy()[:, None, None]
        total += squared.sum(0).mean()
    return total


@pytest.mark.parametrize("weighted", [False, True])
def test_lpips_with_an_injected_net_matches_the_formula(weighted):
    net = TwoLayerNet()
    images, reference = noise_images(3), smooth_images(3)
    weights = [torch.linspace(0.1, 1.0, 6), torch.linspace(2.0, 0.0, 10)] if weighted else None
    with torch.no_grad():
        expected = [
            lpips_reference(
                [m[0] for m in net(image[None])], [m[0] for m in net(target[None])], weights
            )
            for image, target in zip(images, reference, strict=True)
        ]
    per_pair = lpips(images, reference, net=net, layer_weights=weights, reduction=None)
    np.testing.assert_allclose(per_pair, expected, rtol=1e-6)  # float32 convolutions
    assert lpips(images, images, net=net) == 0.0


def test_lpips_formula_matches_torchmetrics_lpips_on_the_same_backbone():
    """Build torchmetrics' own LPIPS module around a local backbone (its constructor would
    download torchvision weights) and compare with an injected net and weights."""
    from torchmetrics.functional.image.lpips import _LPIPS, NetLinLayer, ScalingLayer

    backbone, scaling = TwoLayerNet(), ScalingLayer()
    lins = [
        _seeded(NetLinLayer(channels, use_dropout=False), seed)
        for channels, seed in ((6, 3), (10, 4))
    ]
    for lin in lins:
        lin.model[0].weight.data.abs_()  # calibrated LPIPS weights are non-negative
    reference_lpips = _LPIPS.__new__(_LPIPS)
    nn.Module.__init__(reference_lpips)
    reference_lpips.scaling_layer, reference_lpips.net = scaling, backbone
    reference_lpips.lins, reference_lpips.L = nn.ModuleList(lins), len(lins)
    reference_lpips.resize, reference_lpips.spatial = None, False

    images, reference = noise_images(2, size=20), smooth_images(2, size=20)
    with torch.no_grad():
        expected = reference_lpips(images, reference, normalize=True).flatten().double().numpy()
    ours = lpips(
        images,
        reference,
        net=lambda batch: backbone(scaling(2 * batch - 1)),
        layer_weights=[lin.model[0].weight.flatten() for lin in lins],
        reduction=None,
    )
    np.testing.assert_allclose(ours, expected, rtol=1e-5)


def test_lpips_rejects_layer_weights_of_the_wrong_shape():
    images = noise_images(1)
    with pytest.raises(ValueError, match=r"layer_weights\[1\] has 3 values.*10 channels"):
        lpips(images, images, net=TwoLayerNet(), layer_weights=[torch.ones(6), torch.ones(3)])
    with pytest.raises(ValueError, match="layer_weights has 1 entries but net gives 2"):
        lpips(images, images, net=TwoLayerNet(), layer_weights=[torch.ones(6)])


def test_lpips_names_a_net_that_returns_no_feature_maps():
    images = noise_images(1)
    with pytest.raises(ValueError, match=r"net must map.*images\[0\].*shape \(2, 6\)"):
        lpips(images, images, net=lambda batch: torch.zeros(len(batch), 6))


def test_default_lpips_without_torchvision_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install torchvision.*or pass net="):
        lpips(noise_images(1), noise_images(1))


# --------------------------------------------------------------------------- FID, KID, IS


def test_fid_matches_a_scipy_frechet_reference_on_the_same_features():
    images, reference = noise_images(60), smooth_images(50)
    expected = frechet_reference(features_of(images), features_of(reference))
    value = fid(images, reference, feature_extractor=small_extractor(), batch_size=7)
    assert value == pytest.approx(expected, rel=1e-4)
    assert expected > 0.01  # the sets differ: the comparison is not between two zeros


def test_fid_is_the_squared_w2_distance_of_the_feature_gaussians():
    images, reference = noise_images(40), smooth_images(40, seed=3)
    stats = [
        GaussianStats.from_samples(torch.from_numpy(features_of(s))) for s in (images, reference)
    ]
    w2 = w2_distance(stats[0].mean, stats[0].covariance, stats[1].mean, stats[1].covariance)
    assert fid(images, reference, feature_extractor=small_extractor()) == pytest.approx(
        float(w2) ** 2, rel=1e-6
    )


def test_fid_of_images_of_several_sizes_pools_their_features():
    images = [*noise_images(20, size=16), *noise_images(15, size=20, seed=4)]
    reference = list(smooth_images(30))
    expected = frechet_reference(
        np.concatenate([features_of(images[:20]), features_of(images[20:])]),
        features_of(reference),
    )
    assert fid(images, reference, feature_extractor=small_extractor()) == pytest.approx(
        expected, rel=1e-4
    )


def unbiased_mmd(x, y, degree=3):
    """The unbiased squared MMD with the kernel (x . y / d + 1) ** degree, in numpy."""
    kernel = lambda a, b: (a @ b.T / a.shape[1] + 1) ** degree  # noqa: E731
    m = len(x)
    k_xx, k_yy, k_xy = kernel(x, x), kernel(y, y), kernel(x, y)
    off_diagonal = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return off_diagonal - 2 * k_xy.mean()


def test_kid_with_whole_sets_as_subsets_matches_a_numpy_mmd():
    images, reference = noise_images(15), smooth_images(15)
    expected = unbiased_mmd(features_of(images), features_of(reference))
    value = kid(images, reference, feature_extractor=small_extractor(), subsets=3)
    assert value == pytest.approx(expected, rel=1e-6)


def test_kid_subsets_follow_random_state_and_leave_torch_rng_alone():
    images, reference = noise_images(12), smooth_images(16)
    extractor = small_extractor()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = kid(images, reference, feature_extractor=extractor, subset_size=5, random_state=0)
    assert torch.equal(torch.get_rng_state(), before)
    again = kid(images, reference, feature_extractor=extractor, subset_size=5, random_state=0)
    other = kid(images, reference, feature_extractor=extractor, subset_size=5, random_state=1)
    assert first == again != other


def inception_score_reference(logits):
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    marginal = probabilities.mean(0)
    kl = (probabilities * (np.log(probabilities) - np.log(marginal))).sum(1)
    return float(np.exp(kl.mean()))


def test_inception_score_matches_a_numpy_reference():
    images = torch.cat([noise_images(8), smooth_images(8)])
    expected = inception_score_reference(features_of(images, small_classifier()))
    value = inception_score(images, classifier=small_classifier(), splits=1)
    assert value == pytest.approx(expected, rel=1e-6)
    assert value > 2


def test_inception_score_of_single_image_splits_is_one():
    value = inception_score(noise_images(6), classifier=small_classifier(), splits=6)
    assert value == pytest.approx(1.0, abs=1e-9)


def test_default_inception_without_torch_fidelity_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)
    images = noise_images(2)
    with pytest.raises(ModuleNotFoundError, match=r"torch-fidelity.*feature_extractor="):
        fid(images, images)
    with pytest.raises(ModuleNotFoundError, match=r"torch-fidelity.*classifier="):
        inception_score(images)


def test_missing_optional_packages_point_to_the_metrics_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)
    monkeypatch.setitem(sys.modules, "torchvision", None)
    images = noise_images(2)
    extra = r'pip install "latent-ot\[metrics\]" \(or pip install '
    with pytest.raises(ModuleNotFoundError, match=extra + r"torch-fidelity\)"):
        kid(images, images)
    with pytest.raises(ModuleNotFoundError, match=extra + r"torchvision\)"):
        lpips(images, images, net="vgg")


# --------------------------------------------------------------------------- patch FID


def grid_tiles(images, crop_size):
    return [
        image[:, top : top + crop_size, left : left + crop_size]
        for image in images
        for top in range(0, image.shape[1] - crop_size + 1, crop_size)
        for left in range(0, image.shape[2] - crop_size + 1, crop_size)
    ]


def test_patch_fid_on_the_grid_is_fid_of_the_tiles():
    images, reference = noise_images(3, size=34), smooth_images(2, size=42)
    tiles, reference_tiles = grid_tiles(images, 8), grid_tiles(reference, 8)
    assert len(tiles) == 3 * 16 and len(reference_tiles) == 2 * 25  # 34 px: the last 2 unused
    expected = frechet_reference(features_of(tiles), features_of(reference_tiles))
    value = patch_fid(images, reference, crop_size=8, feature_extractor=small_extractor())
    assert value == pytest.approx(expected, rel=1e-4)


def test_patch_fid_with_whole_image_crops_is_fid():
    images, reference = noise_images(10), smooth_images(10)
    extractor = small_extractor()
    expected = fid(images, reference, feature_extractor=extractor)
    value = patch_fid(images, reference, crop_size=16, feature_extractor=extractor)
    assert value == pytest.approx(expected, rel=1e-9)


def test_patch_fid_random_crops_follow_random_state():
    images, reference = noise_images(2, size=32), smooth_images(2, size=32)
    extractor = small_extractor()
    runs = [
        patch_fid(
            images,
            reference,
            crop_size=8,
            crops_per_image=30,
            feature_extractor=extractor,
            random_state=seed,
        )
        for seed in (0, 0, 1)
    ]
    assert runs[0] == runs[1] != runs[2]


def test_patch_fid_names_an_image_smaller_than_the_crop():
    images = [*noise_images(2, size=16), noise_images(1, size=8)[0]]
    with pytest.raises(ValueError, match=r"images\[2\] is 8 x 8 px, smaller than crop_size=12"):
        patch_fid(images, noise_images(2), crop_size=12, feature_extractor=small_extractor())


# --------------------------------------------------------------------------- latent W2


def direct_patch_stats(latents, patch_size=3):
    return GaussianStats.from_samples(extract_patches(latents.double(), patch_size))


def test_latent_w2_in_pixel_space_is_w2_of_the_patch_gaussians():
    images, reference = noise_images(3), smooth_images(4)
    a, b = direct_patch_stats(images), direct_patch_stats(reference)
    expected = float(w2_distance(a.mean, a.covariance, b.mean, b.covariance))
    value = latent_w2(images, reference, "pixel", patch_size=3, batch_size=2)
    assert value == pytest.approx(expected, rel=1e-9)
    assert latent_w2(images, images, "pixel") == pytest.approx(0.0, abs=1e-5)


def test_latent_w2_is_the_w2_that_the_transformer_fits():
    images, reference = noise_images(3), smooth_images(3)
    fitted = LatentOTTransformer(vae="pixel", device="cpu").fit(images, reference)
    value = latent_w2(images, reference, "pixel", patch_size=fitted.patch_size_)
    assert value == pytest.approx(fitted.w2_, rel=1e-6)


def test_latent_w2_pads_images_to_the_autoencoder_factor(tiny_kl_model):
    autoencoder = load_autoencoder(tiny_kl_model)
    images, reference = noise_images(2, size=13), smooth_images(2, size=16)
    a = direct_patch_stats(autoencoder.encode(pad_to_multiple(images, 2)))
    b = direct_patch_stats(autoencoder.encode(reference))
    expected = float(w2_distance(a.mean, a.covariance, b.mean, b.covariance))
    assert latent_w2(images, reference, autoencoder, patch_size=3) == pytest.approx(
        expected, rel=1e-5
    )


def test_latent_w2_names_images_too_small_for_the_patch():
    with pytest.raises(ValueError, match=r"images\[0\].*smaller than patch_size=5"):
        latent_w2(noise_images(1, size=4), noise_images(1), "pixel", patch_size=5)


# --------------------------------------------------------------------------- evaluate


def test_evaluate_matches_the_individual_metrics():
    images, reference = noise_images(12, size=24), smooth_images(12, size=24)
    extractor, classifier, net = small_extractor(), small_classifier(), TwoLayerNet()
    table = evaluate(
        images,
        reference,
        feature_extractor=extractor,
        classifier=classifier,
        lpips_net=net,
        autoencoder="pixel",
        crop_size=12,
        random_state=0,
    )
    assert list(table) == [*DEFAULT_METRICS, "latent_w2"]
    assert table == pytest.approx(
        {
            "psnr": psnr(images, reference),
            "ssim": ssim(images, reference),
            "lpips": lpips(images, reference, net=net),
            "fid": fid(images, reference, feature_extractor=extractor),
            "kid": kid(images, reference, feature_extractor=extractor, random_state=0),
            "is": inception_score(images, classifier=classifier, splits=1),
            "patch_fid": patch_fid(images, reference, crop_size=12, feature_extractor=extractor),
            "latent_w2": latent_w2(images, reference, "pixel"),
        },
        rel=1e-9,
    )


def test_evaluate_defaults_skip_metrics_whose_network_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)
    monkeypatch.setitem(sys.modules, "torchvision", None)
    images, reference = noise_images(3), smooth_images(3)
    with pytest.warns(MetricSkippedWarning) as record:
        table = evaluate(images, reference, autoencoder="pixel")
    assert list(table) == ["psnr", "ssim", "latent_w2"]
    skipped = sorted(w.message.metric for w in record)
    assert skipped == ["fid", "is", "kid", "lpips", "patch_fid"]


def test_evaluate_warns_one_typed_skip_per_metric_and_computes_the_others(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)
    images, reference = noise_images(3, size=24), smooth_images(3, size=24)
    net = TwoLayerNet()
    with pytest.warns(MetricSkippedWarning) as record:
        table = evaluate(images, reference, lpips_net=net, autoencoder="pixel")
    warned = {w.message.metric: w for w in record}
    assert len(record) == len(warned) and sorted(warned) == ["fid", "is", "kid", "patch_fid"]
    for metric, caught in warned.items():
        warning = caught.message
        assert str(warning).startswith(f"{metric} skipped: ")
        assert "torch-fidelity" in warning.reason and "\n" not in warning.reason
        assert warning.remedy.startswith('pip install "latent-ot[metrics]"')
        assert caught.filename == __file__  # points at the call of evaluate
    assert "classifier=" in warned["is"].message.remedy
    assert "feature_extractor=" in warned["fid"].message.remedy
    assert table == pytest.approx(
        {
            "psnr": psnr(images, reference),
            "ssim": ssim(images, reference),
            "lpips": lpips(images, reference, net=net),
            "latent_w2": latent_w2(images, reference, "pixel"),
        },
        rel=1e-12,
    )
    assert list(table) == ["psnr", "ssim", "lpips", "latent_w2"]


def test_evaluate_skips_a_default_network_whose_weights_cannot_be_loaded(monkeypatch):
    """Weights that cannot be downloaded (an OSError): the first line is the reason, and the
    remedy offers a network of your own."""
    import torchmetrics.image.fid

    def offline(*args, **kwargs):
        raise OSError("cannot download the FID weights\nsecond line")

    monkeypatch.setitem(sys.modules, "torch_fidelity", types.ModuleType("torch_fidelity"))
    monkeypatch.setattr(torchmetrics.image.fid, "NoTrainInceptionV3", offline)
    images = noise_images(2)
    with pytest.warns(MetricSkippedWarning) as record:
        table = evaluate(images, images, lpips_net=TwoLayerNet())
    assert list(table) == ["psnr", "ssim", "lpips"]
    assert sorted(w.message.metric for w in record) == ["fid", "is", "kid", "patch_fid"]
    warning = next(w.message for w in record if w.message.metric == "kid")
    assert warning.reason == "OSError: cannot download the FID weights"
    assert warning.remedy.endswith("or pass feature_extractor=<your network>")


def test_evaluate_fails_on_a_named_metric_whose_network_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)
    with pytest.raises(ModuleNotFoundError, match="torch-fidelity"):
        evaluate(noise_images(3), smooth_images(3), metrics=["psnr", "fid"])


def test_evaluate_checks_metric_names():
    images = noise_images(2)
    with pytest.raises(ValueError, match=r"metrics: unknown.*\['fidd'\]"):
        evaluate(images, images, metrics=["psnr", "fidd"])
    with pytest.raises(ValueError, match="latent_w2 needs an autoencoder"):
        evaluate(images, images, metrics=["latent_w2"])


# --------------------------------------------------------------------------- bad input


def test_paired_metrics_name_mismatched_counts_and_sizes():
    with pytest.raises(ValueError, match="images has more images than reference, which holds 2"):
        psnr(noise_images(3), noise_images(2))
    with pytest.raises(ValueError, match="reference has more images than images, which holds 1"):
        ssim(noise_images(1), noise_images(2))
    with pytest.raises(
        ValueError, match=r"images\[0\] is 16 x 16 px but reference\[0\] is 12 x 12"
    ):
        psnr(noise_images(1), noise_images(1, size=12))


def test_metrics_name_empty_sets():
    with pytest.raises(ValueError, match="images and reference are empty"):
        psnr([], [])
    with pytest.raises(ValueError, match="reference is empty"):
        fid(noise_images(2), [], feature_extractor=small_extractor())


def test_fid_names_a_set_with_too_few_images():
    with pytest.raises(ValueError, match="fid needs at least 2 images in reference; got 1"):
        fid(noise_images(3), noise_images(1), feature_extractor=small_extractor())
    with pytest.raises(ValueError, match=r"subset_size must be between 2 and .* \(3\)"):
        kid(noise_images(3), noise_images(5), feature_extractor=small_extractor(), subset_size=4)


def test_integer_arguments_are_checked_by_kind_and_value():
    images = noise_images(2)
    extractor = small_extractor()
    with pytest.raises(TypeError, match=r"batch_size must be an int >= 1, got float 2\.0"):
        fid(images, images, feature_extractor=extractor, batch_size=2.0)
    with pytest.raises(ValueError, match="crop_size must be an int >= 1, got 0"):
        patch_fid(images, images, crop_size=0, feature_extractor=extractor)
    with pytest.raises(ValueError, match="subset_size must be an int >= 2, got 1"):
        kid(images, images, feature_extractor=extractor, subset_size=1)
    with pytest.raises(TypeError, match="patch_size must be an int >= 1, got bool True"):
        latent_w2(images, images, "pixel", patch_size=True)


def test_ssim_names_an_image_smaller_than_its_window():
    with pytest.raises(ValueError, match=r"images\[0\] is 8 x 8 px; ssim needs at least 11 x 11"):
        ssim(noise_images(1, size=8), noise_images(1, size=8))


def test_feature_extractor_output_is_checked():
    images = noise_images(2)
    with pytest.raises(ValueError, match=r"feature_extractor must map.*shape \(2, 3, 16, 16\)"):
        fid(images, images, feature_extractor=nn.Identity())
    with pytest.raises(TypeError, match="feature_extractor must be a torch module or a callable"):
        fid(images, images, feature_extractor="inception")
    with pytest.raises(ValueError, match="classifier returned NaN"):
        inception_score(images, classifier=lambda batch: torch.full((len(batch), 3), np.nan))


# --------------------------------------------------------------------------- streaming, progress


@pytest.mark.parametrize("photo", ["astronaut", "coffee", "chelsea"])
def test_ssim_matches_scikit_image_on_photos(photo):
    structural_similarity = pytest.importorskip("skimage.metrics").structural_similarity
    clean = getattr(pytest.importorskip("skimage.data"), photo)() / 255.0
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 0.05, clean.shape), 0, 1)
    expected = structural_similarity(
        noisy,
        clean,
        channel_axis=-1,
        data_range=1,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )
    as_tensor = lambda image: torch.from_numpy(image).permute(2, 0, 1).float()  # noqa: E731
    assert ssim(as_tensor(noisy)[None], as_tensor(clean)[None]) == pytest.approx(expected, abs=2e-5)


def test_evaluator_measures_the_reference_once_and_streams_each_set():
    from latent_ot.metrics import Evaluator

    autoencoder = load_autoencoder("pixel")
    encode, encoded = autoencoder.encode, []

    def counted_encode(pixels, generator=None):
        encoded.append(len(pixels))
        return encode(pixels, generator)

    autoencoder.encode = counted_encode
    reference = smooth_images(4)
    evaluator = Evaluator(reference, metrics=["psnr", "latent_w2"], autoencoder=autoencoder)
    calls = []
    sets = [noise_images(4), noise_images(4) * 0.5]
    rows = [evaluator(images, progress=lambda: calls.append(1)) for images in sets]
    assert sum(encoded) == 4 + 4 + 4  # the reference once, then each set's images
    assert len(calls) == 8  # one progress step per image measured
    for row, images in zip(rows, sets, strict=True):
        assert row["psnr"] == pytest.approx(psnr(images, reference), rel=1e-12)
        assert row["latent_w2"] == pytest.approx(
            latent_w2(images, reference, "pixel", patch_size=1), rel=1e-9
        )


def test_evaluator_takes_known_latent_statistics_instead_of_encoding_again():
    from latent_ot.metrics import Evaluator
    from latent_ot.pipeline import patch_stats

    autoencoder = load_autoencoder("pixel")
    encode, encoded = autoencoder.encode, []
    autoencoder.encode = lambda pixels, generator=None: encoded.append(1) or encode(pixels)
    reference, images = smooth_images(3), noise_images(3)
    evaluator = Evaluator(reference, metrics=["psnr", "latent_w2"], autoencoder=autoencoder)
    measured = evaluator(images)
    encoded.clear()
    known = patch_stats(images[:2], 1).merge(patch_stats(images[2:], 1))
    row = evaluator(images, latent_stats=known)
    assert encoded == []  # the images are not encoded again
    assert row["psnr"] == measured["psnr"]
    assert row["latent_w2"] == pytest.approx(measured["latent_w2"], rel=1e-9)
    latent_only = Evaluator(reference, metrics=["latent_w2"], autoencoder=autoencoder)
    assert latent_only(images, latent_stats=known)["latent_w2"] == pytest.approx(
        measured["latent_w2"]
    )
    with pytest.raises(TypeError, match="latent_stats: expected GaussianStats, got ndarray"):
        evaluator(images, latent_stats=np.zeros(3))
    with pytest.raises(ValueError, match="latent_stats: statistics of 27-dimensional patch"):
        evaluator(images, latent_stats=patch_stats(images, 3))
    without = Evaluator(reference, metrics=["psnr"])
    with pytest.raises(ValueError, match="latent_stats: this evaluator does not compute"):
        without(images, latent_stats=known)


def test_evaluator_encodes_outside_the_allocator_policy_that_keeps_freed_memory(monkeypatch):
    # Kept memory would also hold what the pixel metrics free between passes: a higher peak.
    import contextlib

    from latent_ot import memory
    from latent_ot.metrics import Evaluator

    autoencoder = load_autoencoder("pixel")
    inside, encoded_inside = [], []
    encode = autoencoder.encode

    @contextlib.contextmanager
    def policy(owner):
        assert owner is autoencoder
        inside.append(True)
        try:
            yield True
        finally:
            inside.pop()

    def recording_encode(pixels, generator=None):
        encoded_inside.append(bool(inside))
        return encode(pixels, generator)

    monkeypatch.setattr(memory, "reusing_freed_memory", policy)
    autoencoder.encode = recording_encode
    evaluator = Evaluator(smooth_images(2), metrics=["latent_w2"], autoencoder=autoencoder)
    evaluator(noise_images(2))
    assert encoded_inside == [False] * 4  # the two references, then the two images


class CapturingBar:
    """A stand-in for tqdm that records what each bar counted."""

    bars: ClassVar[list] = []

    def __init__(self, iterable=None, *, total=None, desc="", **kwargs):
        self.total, self.desc, self.n = total, desc, 0
        CapturingBar.bars.append(self)

    def update(self, n=1):
        self.n += n

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_progress_counts_images_encoded_and_tiles(monkeypatch):
    from latent_ot.pipeline import statistics

    CapturingBar.bars = []
    monkeypatch.setattr(statistics, "tqdm", CapturingBar)
    autoencoder = load_autoencoder("pixel").set_tiling(8, overlap=0)
    images = [noise_images(1, size=16)[0], noise_images(1, size=8)[0], noise_images(1, size=8)[0]]
    seen = []
    for _, n_images in statistics.latent_patch_stats(
        images, autoencoder, 1, batch_size=2, verbose=True, desc="encoding"
    ):
        # counted once encoded, not when read
        seen.append((n_images, CapturingBar.bars[0].n))
    image_bar, *tile_bars = CapturingBar.bars
    assert image_bar.desc == "encoding" and image_bar.n == 3
    assert [n for n, _ in seen] == [2, 1] or [n for n, _ in seen] == [1, 2]
    assert [done for _, done in seen] == [0, seen[0][0]]
    # the 16 x 16 image runs in 2 x 2 tiles of 8 px
    assert [(bar.desc, bar.total, bar.n) for bar in tile_bars] == [("encoding tiles", 4, 4)]
