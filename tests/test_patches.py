"""Tests of latent_ot.patches: extraction, chunking, folding and patch-wise transport."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from latent_ot.patches import (
    extract_patches,
    fold_patches,
    gaussian_window,
    iter_patch_chunks,
    map_patches,
    patch_dim,
)

DOUBLE = torch.float64


def random_latents(*shape: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=DOUBLE)


def random_affine_map(dim: int, seed: int = 1):
    """A patch map that mixes all elements of a patch vector: v -> A v + b."""
    generator = torch.Generator().manual_seed(seed)
    matrix = torch.randn(dim, dim, generator=generator, dtype=DOUBLE)
    offset = torch.randn(dim, generator=generator, dtype=DOUBLE)
    return lambda patches: patches @ matrix.T + offset


# --------------------------------------------------------------------------- naive references


def naive_patches(latents: torch.Tensor, p: int) -> torch.Tensor:
    """All patches with explicit loops; element c * p * p + a * p + b is channel c, row a, col b."""
    n, c, h, w = latents.shape
    rows = []
    for image in range(n):
        for i in range(h - p + 1):
            for j in range(w - p + 1):
                vector = torch.empty(c * p * p, dtype=latents.dtype)
                for channel in range(c):
                    for a in range(p):
                        for b in range(p):
                            vector[channel * p * p + a * p + b] = latents[
                                image, channel, i + a, j + b
                            ]
                rows.append(vector)
    return torch.stack(rows)


def naive_fold(patches, output_size, p, window=None):
    """Weighted average of every pixel over the patches covering it, with explicit loops."""
    h, w = output_size
    positions = (h - p + 1) * (w - p + 1)
    n, c = len(patches) // positions, patches.shape[1] // (p * p)
    weights = torch.ones(p, p, dtype=patches.dtype) if window is None else window
    total = torch.zeros(n, c, h, w, dtype=patches.dtype)
    weight_sum = torch.zeros(h, w, dtype=patches.dtype)
    row = 0
    for image in range(n):
        for i in range(h - p + 1):
            for j in range(w - p + 1):
                patch = patches[row].reshape(c, p, p)
                total[image, :, i : i + p, j : j + p] += weights * patch
                if image == 0:
                    weight_sum[i : i + p, j : j + p] += weights
                row += 1
    return total / weight_sum


def naive_transport(latents, p, patch_map, window=None):
    """Replicate-pad, map every patch one at a time, average back, crop."""
    before, after = (p - 1) // 2, p // 2
    padded = F.pad(latents, (before, after, before, after), mode="replicate")
    mapped = torch.cat([patch_map(vector[None]) for vector in naive_patches(padded, p)])
    folded_size = (padded.shape[2], padded.shape[3])
    n, c, h, w = latents.shape
    weights = torch.ones(p, p, dtype=latents.dtype) if window is None else window
    total = torch.zeros(n, c, *folded_size, dtype=latents.dtype)
    weight_sum = torch.zeros(folded_size, dtype=latents.dtype)
    row = 0
    for image in range(n):
        for i in range(h):
            for j in range(w):
                total[image, :, i : i + p, j : j + p] += weights * mapped[row].reshape(c, p, p)
                if image == 0:
                    weight_sum[i : i + p, j : j + p] += weights
                row += 1
    return (total / weight_sum)[:, :, before : before + h, before : before + w]


# --------------------------------------------------------------------------- extraction


def test_patch_dim():
    assert patch_dim(4, 3) == 36
    assert patch_dim(1, 1) == 1


@pytest.mark.parametrize(("shape", "p"), [((1, 1, 3, 3), 2), ((2, 3, 4, 5), 3), ((1, 2, 5, 4), 1)])
def test_extract_patches_matches_naive_loops(shape, p):
    latents = random_latents(*shape)
    expected = naive_patches(latents, p)
    actual = extract_patches(latents, p)
    n, c, h, w = shape
    assert actual.shape == (n * (h - p + 1) * (w - p + 1), c * p * p)
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def test_extract_patches_vector_layout_is_channel_major():
    latents = torch.arange(2 * 3 * 3, dtype=DOUBLE).reshape(1, 2, 3, 3)
    # Second patch (top-left corner at row 0, column 1): channel 0 then channel 1, row by row.
    assert extract_patches(latents, 2)[1].tolist() == [1, 2, 4, 5, 10, 11, 13, 14]


def test_extract_patches_rows_go_image_by_image():
    latents = random_latents(3, 2, 4, 4)
    per_image = 3 * 3
    patches = extract_patches(latents, 2)
    for image in range(3):
        block = patches[image * per_image : (image + 1) * per_image]
        torch.testing.assert_close(block, extract_patches(latents[image : image + 1], 2))


def test_extract_patches_does_not_alias_latents():
    latents = random_latents(1, 2, 3, 3)
    original = latents.clone()
    extract_patches(latents, 1).fill_(0.0)
    assert torch.equal(latents, original)


def test_extract_patches_rejects_latent_smaller_than_patch():
    with pytest.raises(ValueError, match=r"latent size 2 x 5 .*`patch_size` 3"):
        extract_patches(random_latents(1, 1, 2, 5), 3)


# --------------------------------------------------------------------------- chunking


@settings(max_examples=40, deadline=None)
@given(
    num_images=st.integers(1, 3),
    channels=st.integers(1, 3),
    patch_size=st.integers(1, 4),
    extra_height=st.integers(0, 6),
    extra_width=st.integers(0, 6),
    max_patches=st.integers(1, 120),
)
def test_iter_patch_chunks_concatenate_to_extract_patches(
    num_images, channels, patch_size, extra_height, extra_width, max_patches
):
    latents = random_latents(
        num_images, channels, patch_size + extra_height, patch_size + extra_width
    )
    chunks = list(iter_patch_chunks(latents, patch_size, max_patches=max_patches))
    assert all(1 <= len(chunk) <= max_patches for chunk in chunks)
    assert torch.equal(torch.cat(chunks), extract_patches(latents, patch_size))


def test_iter_patch_chunks_splits_a_row_longer_than_max_patches():
    latents = random_latents(1, 2, 3, 12)  # 10 patches per row with p = 3
    chunks = list(iter_patch_chunks(latents, 3, max_patches=4))
    assert [len(chunk) for chunk in chunks] == [4, 4, 2]
    assert torch.equal(torch.cat(chunks), extract_patches(latents, 3))


def test_iter_patch_chunks_checks_arguments_when_called():
    with pytest.raises(ValueError, match="max_patches"):
        iter_patch_chunks(random_latents(1, 1, 4, 4), 2, max_patches=0)


# --------------------------------------------------------------------------- windows and folding


@pytest.mark.parametrize("p", [1, 2, 3, 4, 5])
def test_gaussian_window_is_centred_symmetric_separable_with_max_one(p):
    window = gaussian_window(p)
    assert window.shape == (p, p)
    assert window.dtype == DOUBLE
    assert window.max().item() == pytest.approx(1.0)
    torch.testing.assert_close(window, window.flip(0))
    torch.testing.assert_close(window, window.T)
    profile = window[p // 2] / window[p // 2].max()
    torch.testing.assert_close(window, torch.outer(profile, profile))


def test_gaussian_window_default_sigma_is_quarter_patch_size():
    torch.testing.assert_close(gaussian_window(5), gaussian_window(5, sigma=1.25))
    # Centre 1, one pixel off the centre exp(-1 / (2 sigma^2)).
    assert gaussian_window(5)[2, 3].item() == pytest.approx(torch.exp(torch.tensor(-0.32)).item())


@pytest.mark.parametrize("sigma", [0.0, -1.0, float("nan"), float("inf")])
def test_gaussian_window_rejects_bad_sigma(sigma):
    with pytest.raises(ValueError, match="sigma"):
        gaussian_window(3, sigma)


@pytest.mark.parametrize("window", [None, gaussian_window(3)])
def test_fold_patches_inverts_extract_patches(window):
    latents = random_latents(2, 3, 5, 7)
    folded = fold_patches(extract_patches(latents, 3), (5, 7), 3, window=window)
    torch.testing.assert_close(folded, latents, rtol=0, atol=1e-12)


ASYMMETRIC_WINDOW = torch.tensor([[1.0, 0.2], [0.5, 0.1]], dtype=DOUBLE)


@pytest.mark.parametrize("window", [None, gaussian_window(2, sigma=0.7), ASYMMETRIC_WINDOW])
def test_fold_patches_averages_like_naive_loops(window):
    patches = random_latents(2 * 3 * 4, 3 * 2 * 2)  # N = 2, C = 3, 4 x 5 latent, p = 2
    folded = fold_patches(patches, (4, 5), 2, window=window)
    torch.testing.assert_close(folded, naive_fold(patches, (4, 5), 2, window), rtol=0, atol=1e-12)


def test_fold_patches_rejects_row_count_that_is_not_whole_images():
    with pytest.raises(ValueError, match="`patches` has 5 rows"):
        fold_patches(random_latents(5, 4), (3, 3), 2)


# --------------------------------------------------------------------------- transport


@pytest.mark.parametrize(
    ("shape", "p"),
    [
        ((2, 3, 6, 5), 3),
        ((1, 2, 6, 5), 4),
        ((2, 2, 4, 4), 1),
        ((1, 2, 2, 6), 5),  # h < p
        ((1, 2, 6, 1), 2),  # w < p
        ((1, 1, 1, 1), 3),
    ],
)
@pytest.mark.parametrize("use_window", [False, True])
def test_transport_identity_returns_latents(shape, p, use_window):
    latents = random_latents(*shape)
    window = gaussian_window(p) if use_window else None
    result = map_patches(latents, p, lambda patches: patches, window=window)
    torch.testing.assert_close(result, latents, rtol=0, atol=1e-12)


@pytest.mark.parametrize("p", [2, 3])
def test_transport_pixelwise_affine_map_equals_pixelwise_application(p):
    latents = random_latents(2, 4, 5, 6)
    result = map_patches(latents, p, lambda patches: 2 * patches + 1)
    torch.testing.assert_close(result, 2 * latents + 1, rtol=0, atol=1e-12)


def centre_shift_map(channels: int, p: int, shift: float = 10.0):
    """Add ``shift`` to the centre element of every channel of a patch only."""
    centre = (p - 1) // 2
    index = [c * p * p + centre * p + centre for c in range(channels)]

    def patch_map(patches):
        shifted = patches.clone()
        shifted[:, index] += shift
        return shifted

    return patch_map


@pytest.mark.parametrize("p", [2, 3, 4])
@pytest.mark.parametrize("use_window", [False, True])
def test_transport_centre_shift_matches_naive_reference(p, use_window):
    latents = random_latents(2, 2, 5, 4)
    window = gaussian_window(p) if use_window else None
    patch_map = centre_shift_map(2, p)
    result = map_patches(latents, p, patch_map, window=window)
    expected = naive_transport(latents, p, patch_map, window)
    torch.testing.assert_close(result, expected, rtol=0, atol=1e-12)
    # Each pixel gets the shift from its own patch only; inside, that is 1 of p * p patches.
    assert torch.all(result - latents > 0)
    if not use_window:
        shift = result[:, :, 2, 2] - latents[:, :, 2, 2]
        torch.testing.assert_close(shift, torch.full_like(shift, 10 / p**2), rtol=0, atol=1e-12)


@pytest.mark.parametrize("p", [2, 3])
def test_transport_mixing_affine_map_matches_naive_reference(p):
    latents = random_latents(1, 2, 4, 5)
    patch_map = random_affine_map(patch_dim(2, p))
    # Asymmetric positive weights, so that a flipped window would be caught.
    window = torch.rand(p, p, generator=torch.Generator().manual_seed(2), dtype=DOUBLE) + 0.1
    result = map_patches(latents, p, patch_map, window=window)
    expected = naive_transport(latents, p, patch_map, window)
    torch.testing.assert_close(result, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("max_patches", [1, 3, 7, 30, 31, 61])
def test_transport_chunks_stay_small_and_match_unchunked(max_patches):
    latents = random_latents(2, 2, 5, 6)  # 30 patches per image, rows of 6
    affine = random_affine_map(patch_dim(2, 3))
    chunk_sizes = []

    def recording_map(patches):
        chunk_sizes.append(len(patches))
        return affine(patches)

    chunked = map_patches(latents, 3, recording_map, max_patches=max_patches)
    whole = map_patches(latents, 3, affine, max_patches=10**9)
    assert max(chunk_sizes) <= max_patches
    assert sum(chunk_sizes) == 2 * 5 * 6
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-12)


@pytest.mark.parametrize("p", [2, 3, 5])
def test_transport_replicates_the_border(p):
    # Replacing a patch by its mean mixes the padding into border pixels: a constant latent
    # stays constant with replicate padding, not with zero padding. (An element-wise map such
    # as v -> v ** 2 could not tell: padded elements only land on pixels that are cropped.)
    latents = torch.full((1, 2, 4, 6), 3.0, dtype=DOUBLE)

    def patch_mean(patches):
        return patches.mean(dim=1, keepdim=True).expand_as(patches)

    result = map_patches(latents, p, patch_mean)
    torch.testing.assert_close(result, latents, rtol=0, atol=1e-12)


def test_transport_keeps_dtype_and_passes_compute_dtype_to_the_map():
    latents = random_latents(1, 2, 4, 4).float()
    seen = []

    def recording_map(patches):
        seen.append(patches.dtype)
        return patches

    result = map_patches(latents, 3, recording_map, compute_dtype=torch.float32)
    assert result.dtype == torch.float32
    assert seen == [torch.float32]
    result = map_patches(latents, 3, recording_map)
    assert result.dtype == torch.float32
    assert seen[-1] == DOUBLE


def test_transport_empty_batch():
    latents = random_latents(0, 2, 4, 4)
    assert map_patches(latents, 3, lambda patches: patches).shape == (0, 2, 4, 4)


def test_transport_rejects_map_changing_the_shape():
    with pytest.raises(ValueError, match="`patch_map` must return a tensor of the shape"):
        map_patches(random_latents(1, 2, 4, 4), 3, lambda patches: patches[:, :-1])


def test_transport_rejects_window_leaving_pixels_uncovered():
    corner_only = torch.zeros(3, 3, dtype=DOUBLE)
    corner_only[0, 0] = 1.0
    with pytest.raises(ValueError, match="`window` leaves some latent pixels"):
        map_patches(random_latents(1, 1, 4, 4), 3, lambda v: v, window=corner_only)


# --------------------------------------------------------------------------- bad arguments


def identity(patches):
    return patches


LATENTS = random_latents(1, 2, 4, 4)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: extract_patches(LATENTS, 0), ValueError, "patch_size must be an int >= 1"),
        (lambda: extract_patches(LATENTS, 2.0), TypeError, "patch_size must be an int"),
        (lambda: extract_patches(LATENTS, True), TypeError, "patch_size"),
        (lambda: extract_patches(LATENTS[0], 2), ValueError, "`latents` must be 4-D"),
        (lambda: extract_patches(LATENTS.numpy(), 2), TypeError, "`latents` must be a torch"),
        (lambda: extract_patches(LATENTS.long(), 2), TypeError, "`latents` must have a float"),
        (lambda: patch_dim(0, 3), ValueError, "channels"),
        (lambda: gaussian_window(0), ValueError, "patch_size"),
        (lambda: gaussian_window(3, "1"), TypeError, "`sigma`"),
        (
            lambda: list(iter_patch_chunks(LATENTS, 2, max_patches=-1)),
            ValueError,
            "max_patches",
        ),
        (lambda: fold_patches(LATENTS[0, 0], (5,), 2), ValueError, "`output_size`"),
        (lambda: fold_patches(random_latents(9, 5), (4, 4), 2), ValueError, "columns"),
        (lambda: map_patches(LATENTS, 3, identity, max_patches=0), ValueError, "max_patch"),
        (lambda: map_patches(LATENTS, -1, identity), ValueError, "patch_size"),
        (lambda: map_patches(LATENTS, 3, "map"), TypeError, "`patch_map` must be callable"),
        (
            lambda: map_patches(LATENTS, 3, identity, compute_dtype=torch.int64),
            TypeError,
            "`compute_dtype`",
        ),
        (
            lambda: map_patches(LATENTS, 3, identity, window=torch.ones(2, 2)),
            ValueError,
            r"`window` must have shape \(3, 3\)",
        ),
        (
            lambda: map_patches(LATENTS, 2, identity, window=-torch.ones(2, 2)),
            ValueError,
            "`window` must be non-negative",
        ),
        (
            lambda: map_patches(LATENTS, 2, identity, window=torch.zeros(2, 2)),
            ValueError,
            "`window` must have a positive sum",
        ),
        (
            lambda: map_patches(LATENTS, 2, identity, window=torch.full((2, 2), float("nan"))),
            ValueError,
            "`window` must be finite",
        ),
        (
            lambda: map_patches(LATENTS, 2, lambda v: v.numpy()),
            TypeError,
            "`patch_map` must return a torch.Tensor",
        ),
    ],
)
def test_bad_arguments_raise_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()
