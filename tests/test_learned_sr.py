"""The Keras-graph interpreter of ``benchmarks/_learned_sr.py`` (the UpscalerJS networks).

Checked against TensorFlow's documented definitions written independently in numpy, and
against torch's own ``"same"`` padding; none of these tests needs the shared models, except
the last, which runs the packages' self-check where ``../shared`` is present.
"""

import importlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def sr():
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))
        yield importlib.import_module("_learned_sr")
    sys.modules.pop("_learned_sr", None)


def _depth_to_space_nhwc(x: np.ndarray, block: int) -> np.ndarray:
    """tf.nn.depth_to_space's definition on N x H x W x C."""
    n, h, w, c = x.shape
    out = c // block**2
    x = x.reshape(n, h, w, block, block, out).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, h * block, w * block, out)


def test_depth_to_space_is_tensorflows_order_not_torchs(sr):
    # One pixel, 8 channels, block 2: output channel c of pixel (i, j) is input channel
    # (2 i + j) * 2 + c, by hand.
    x = torch.arange(8.0).reshape(1, 8, 1, 1)
    out = sr.depth_to_space(x, 2)
    assert out.shape == (1, 2, 2, 2)
    np.testing.assert_array_equal(out[0, 0].numpy(), [[0, 2], [4, 6]])
    np.testing.assert_array_equal(out[0, 1].numpy(), [[1, 3], [5, 7]])
    assert not torch.equal(out, F.pixel_shuffle(x, 2))  # torch reads c * 4 + 2 i + j
    rng = np.random.default_rng(0)
    nhwc = rng.standard_normal((2, 3, 5, 27))
    expected = _depth_to_space_nhwc(nhwc, 3)
    got = sr.depth_to_space(torch.from_numpy(nhwc).permute(0, 3, 1, 2), 3).permute(0, 2, 3, 1)
    np.testing.assert_array_equal(got.numpy(), expected)
    with pytest.raises(ValueError, match="5 channels are not a multiple of 2"):
        sr.depth_to_space(torch.zeros(1, 5, 2, 2), 2)


@pytest.mark.parametrize("size", [1, 7, 8, 10, 13])
@pytest.mark.parametrize("kernel", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("dilation", [1, 2])
def test_same_padding_gives_ceil_size_over_stride_with_the_odd_pixel_after(
    sr, size, kernel, stride, dilation
):
    before, after = sr.tf_same_padding(size, kernel, stride, dilation)
    span = (kernel - 1) * dilation + 1
    assert (size + before + after - span) // stride + 1 == math.ceil(size / stride)
    assert after - before in (0, 1) and before >= 0
    # The least padding that does it: one pixel less would lose an output.
    if before + after > 0:
        assert (size + before + after - 1 - span) // stride + 1 < math.ceil(size / stride)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_same_padding_matches_torchs_same_convolution_for_even_kernels(sr):
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.standard_normal((1, 2, 9, 6)))
    kernel = torch.from_numpy(rng.standard_normal((3, 2, 4, 2)))
    top, bottom = sr.tf_same_padding(9, 4)
    left, right = sr.tf_same_padding(6, 2)
    assert (top, bottom, left, right) == (1, 2, 0, 1)
    ours = F.conv2d(F.pad(x, (left, right, top, bottom)), kernel)
    torch.testing.assert_close(ours, F.conv2d(x, kernel, padding="same"))


# --------------------------------------------------------------------------- a tiny graph


def _conv_nhwc(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, same: bool) -> np.ndarray:
    """Keras Conv2D (stride 1) by loops: TF's 'same' puts the odd padding pixel after."""
    kh, kw = kernel.shape[:2]
    if same:
        x = np.pad(x, ((0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)))
    n, h, w, _ = x.shape
    out = np.zeros((n, h - kh + 1, w - kw + 1, kernel.shape[3]))
    for i in range(kh):
        for j in range(kw):
            out += np.einsum("nhwc,co->nhwo", x[:, i : i + out.shape[1], j : j + out.shape[2]],
                             kernel[i, j])  # fmt: skip
    return out + bias


def _layer(class_name, name, inbound, **config):
    return {
        "class_name": class_name,
        "name": name,
        "config": {"name": name, **config},
        "inbound_nodes": [[[source, 0, 0, {}] for source in inbound]] if inbound else [],
    }


def _conv(name, inbound, kernel, padding, activation="linear"):
    return _layer(
        "Conv2D", name, inbound, filters=kernel, kernel_size=[1, 1], strides=[1, 1],
        padding=padding, data_format="channels_last", dilation_rate=[1, 1], groups=1,
        activation=activation, use_bias=True,
    )  # fmt: skip


def _write_model(folder: Path, weights: dict[str, np.ndarray]) -> None:
    layers = [
        _layer("InputLayer", "LR", [], batch_input_shape=[None, None, None, 3]),
        _conv("a", ["LR"], 4, "same", activation="relu"),
        _layer("Activation", "lin", ["a"], activation="linear"),
        _layer("Concatenate", "cat", ["lin", "LR"], axis=3),
        _conv("b", ["cat"], 12, "valid"),
        _layer("MultiplyBeta", "m", ["b"]),
        _layer("Add", "s", ["m", "b"]),
        _layer("PixelShuffle2x", "p", ["s"], scale=2),
        _layer("UpSampling2D", "u", ["p"], size=[2, 3], interpolation="nearest"),
    ]
    # Weights in another order than the layers, and split over two shards mid-weight.
    names = ["b/bias", "a/kernel", "b/kernel", "a/bias"]
    data = b"".join(weights[name].astype("<f4").tobytes() for name in names)
    (folder / "shard1").write_bytes(data[:50])
    (folder / "shard2").write_bytes(data[50:])
    manifest = [
        {
            "paths": ["shard1", "shard2"],
            "weights": [
                {"name": n, "shape": list(weights[n].shape), "dtype": "float32"} for n in names
            ],
        }
    ]
    model = {
        "format": "layers-model",
        "modelTopology": {
            "model_config": {
                "class_name": "Functional",
                "config": {
                    "name": "tiny",
                    "layers": layers,
                    "input_layers": [["LR", 0, 0]],
                    "output_layers": [["u", 0, 0]],
                },
            }
        },
        "weightsManifest": manifest,
    }
    (folder / "model.json").write_text(json.dumps(model), encoding="utf-8")


def test_a_tiny_graph_is_interpreted_as_keras_defines_it(sr, tmp_path):
    rng = np.random.default_rng(2)
    weights = {
        "a/kernel": rng.standard_normal((2, 3, 3, 4)),  # even kernel: asymmetric padding
        "a/bias": rng.standard_normal(4),
        "b/kernel": rng.standard_normal((1, 1, 7, 12)),
        "b/bias": rng.standard_normal(12),
    }
    weights = {name: value.astype(np.float32).astype(np.float64) for name, value in weights.items()}
    _write_model(tmp_path, weights)
    # The layers' kernel sizes come from the weights; the JSON's kernel_size is not read.
    x = rng.standard_normal((1, 5, 6, 3))
    a = np.maximum(_conv_nhwc(x, weights["a/kernel"], weights["a/bias"], same=True), 0)
    b = _conv_nhwc(np.concatenate([a, x], axis=3), weights["b/kernel"], weights["b/bias"], False)
    expected = _depth_to_space_nhwc(0.2 * b + b, 2).repeat(2, axis=1).repeat(3, axis=2)
    model = sr.LayersModel(tmp_path / "model.json")
    got = model(torch.from_numpy(x).float().permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    assert got.shape == (1, 20, 36, 3)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-4)


def test_unknown_layers_and_short_shards_are_refused(sr, tmp_path):
    with pytest.raises(NotImplementedError, match="layer z: class 'Lambda' is not interpreted"):
        sr._layer("Lambda", {"name": "z"}, {})
    (tmp_path / "shard").write_bytes(np.zeros(3, "<f4").tobytes())
    manifest = [{"paths": ["shard"], "weights": [{"name": "w", "shape": [2], "dtype": "float32"}]}]
    with pytest.raises(ValueError, match="the manifest reads 8 bytes of 12"):
        sr.read_weights(tmp_path, manifest)


def test_the_packages_own_samples_are_reproduced(sr, shared_dir):
    """The self-check of the README, on the fastest model: within one grey level."""
    from PIL import Image

    package = shared_dir / "models" / "upscalerjs-esrgan-medium"
    with Image.open(package / "assets" / "fixture.png") as image:
        fixture = np.asarray(image.convert("RGB"))
    with Image.open(package / "assets" / "samples" / "2x" / "result.png") as image:
        expected = np.asarray(image.convert("RGB")).astype(int)
    upscaler = sr.Upscaler("esrgan-medium-x2", shared_dir)
    assert upscaler.range == 255.0  # RDN works on 0..255
    result = upscaler(fixture).astype(int)
    assert result.shape == expected.shape
    assert np.abs(result - expected).max() <= 1
