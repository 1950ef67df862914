"""Learned super-resolution restorers for ``quality.py``: the UpscalerJS networks, in torch.

``shared/models/`` holds two fidelity-trained networks of UpscalerJS (MIT) as TensorFlow.js
*layers-models*: a ``model.json`` (a Keras functional graph and a manifest of its weights)
and float32 shards. `load_layers_model` interprets such a graph in torch; `Upscaler` wraps
one model folder with the value range its package uses (RDN: pixels in 0..255, RRDN: 0..1;
outputs clipped and rounded to uint8).

The graph's layers and their torch equivalents:

- ``Conv2D``: kernels HWIO, stride 1; TF's ``"same"`` padding (`tf_same_padding`: the total
  ``(ceil(n / s) - 1) s + (k - 1) d + 1 - n``, the larger half *after*) or ``"valid"``;
- ``Activation`` (relu, linear), ``Add``, ``Concatenate`` (NHWC axis 3 is torch's 1);
- ``UpSampling2D`` (nearest), ``MultiplyBeta`` (times `BETA`, ``js/esrgan.js``);
- ``PixelShuffle{N}x``: ``tf.depthToSpace`` in NHWC order (`depth_to_space`), in which
  output pixel ``(h s + i, w s + j)`` of channel ``c`` reads input channel
  ``(i s + j) C + c``; torch's ``pixel_shuffle`` reads ``c s^2 + i s + j`` instead.

Self-check against the packages' own outputs (``assets/samples/<N>x/result.png``)::

    python benchmarks/_learned_sr.py --self-check
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

BETA = 0.2  # MultiplyBeta's constant, ``js/esrgan.js``
DEFAULT_SHARED = Path(__file__).resolve().parents[2] / "shared"
MODELS = {  # name of the benchmark's tasks -> folder under shared/models and the scale
    "esrgan-medium-x2": ("upscalerjs-esrgan-medium", 2),
    "esrgan-medium-x3": ("upscalerjs-esrgan-medium", 3),
    "esrgan-medium-x4": ("upscalerjs-esrgan-medium", 4),
    "esrgan-medium-x8": ("upscalerjs-esrgan-medium", 8),
    "esrgan-thick-x2": ("upscalerjs-esrgan-thick-x2", 2),
}
# The pixel range each architecture reads and writes (UpscalerJS's getESRGANModelDefinition).
INPUT_RANGE = {"rdn": 255.0, "rrdn": 1.0}


def tf_same_padding(size: int, kernel: int, stride: int = 1, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's ``"same"`` padding of one axis: (before, after), the odd pixel after.

    Examples
    --------
    >>> tf_same_padding(10, 3), tf_same_padding(10, 4), tf_same_padding(10, 3, stride=2)
    ((1, 1), (1, 2), (0, 1))
    """
    total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def depth_to_space(x: torch.Tensor, block: int) -> torch.Tensor:
    """``tf.depthToSpace(x, block, "NHWC")`` on an ``N x C x H x W`` tensor.

    Examples
    --------
    >>> depth_to_space(torch.arange(4.0).reshape(1, 4, 1, 1), 2)[0, 0]
    tensor([[0., 1.],
            [2., 3.]])
    """
    n, channels, height, width = x.shape
    if channels % (block * block):
        raise ValueError(f"depth_to_space: {channels} channels are not a multiple of {block}^2")
    out = channels // (block * block)
    x = x.reshape(n, block, block, out, height, width).permute(0, 3, 4, 1, 5, 2)
    return x.reshape(n, out, height * block, width * block)


def _conv2d(config: dict[str, Any], weights: dict[str, torch.Tensor]) -> Callable:
    name = config["name"]
    kernel = weights[f"{name}/kernel"].permute(3, 2, 0, 1).contiguous()  # HWIO -> OIHW
    bias = weights.get(f"{name}/bias") if config.get("use_bias", True) else None
    stride, dilation = tuple(config["strides"]), tuple(config["dilation_rate"])
    if config.get("groups", 1) != 1 or config.get("data_format") != "channels_last":
        raise NotImplementedError(f"Conv2D {name}: only groups=1, channels_last")
    if stride != (1, 1):
        raise NotImplementedError(f"Conv2D {name}: only stride 1, got {stride}")
    activation = _activation(config.get("activation", "linear"), name)

    def conv(x: torch.Tensor) -> torch.Tensor:
        if config["padding"] == "same":
            top, bottom = tf_same_padding(x.shape[2], kernel.shape[2], 1, dilation[0])
            left, right = tf_same_padding(x.shape[3], kernel.shape[3], 1, dilation[1])
            x = F.pad(x, (left, right, top, bottom))
        elif config["padding"] != "valid":
            raise NotImplementedError(f"Conv2D {name}: padding {config['padding']!r}")
        return activation(F.conv2d(x, kernel, bias, dilation=dilation))

    return conv


def _activation(kind: str, name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    known = {"linear": lambda x: x, "relu": torch.relu, "sigmoid": torch.sigmoid}
    if kind not in known:
        raise NotImplementedError(f"layer {name}: activation {kind!r}")
    return known[kind]


def _channel_axis(axis: int) -> int:
    if axis not in (3, -1):
        raise NotImplementedError(f"Concatenate on NHWC axis {axis}: only the channels (3)")
    return 1


def _layer(class_name: str, config: dict[str, Any], weights: dict[str, torch.Tensor]):
    """The torch function of one Keras layer: a list of input tensors -> a tensor."""
    name = config["name"]
    if class_name == "Conv2D":
        conv = _conv2d(config, weights)
        return lambda xs: conv(xs[0])
    if class_name == "Activation":
        act = _activation(config["activation"], name)
        return lambda xs: act(xs[0])
    if class_name == "Add":
        return lambda xs: sum(xs[1:], xs[0])
    if class_name == "Concatenate":
        axis = _channel_axis(config.get("axis", -1))
        return lambda xs: torch.cat(xs, dim=axis)
    if class_name == "UpSampling2D":
        if config.get("interpolation", "nearest") != "nearest":
            raise NotImplementedError(f"UpSampling2D {name}: only nearest")
        size = tuple(config["size"])
        return lambda xs: xs[0].repeat_interleave(size[0], 2).repeat_interleave(size[1], 3)
    if class_name == "MultiplyBeta":
        return lambda xs: xs[0] * BETA
    shuffle = re.fullmatch(r"PixelShuffle(\d+)x", class_name)
    if shuffle:
        block = int(shuffle.group(1))
        return lambda xs: depth_to_space(xs[0], block)
    raise NotImplementedError(f"layer {name}: class {class_name!r} is not interpreted")


def read_weights(folder: Path, manifest: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """The float32 weights of a TF.js manifest: each group's shards concatenated, the weights
    read in manifest order."""
    weights: dict[str, torch.Tensor] = {}
    for group in manifest:
        data = b"".join((folder / path).read_bytes() for path in group["paths"])
        offset = 0
        for entry in group["weights"]:
            if entry["dtype"] != "float32":
                raise NotImplementedError(f"weight {entry['name']}: dtype {entry['dtype']}")
            count = math.prod(entry["shape"])
            values = np.frombuffer(data, dtype="<f4", count=count, offset=offset)
            weights[entry["name"]] = torch.from_numpy(values.copy()).reshape(entry["shape"])
            offset += 4 * count
        if offset != len(data):
            raise ValueError(f"{folder}: the manifest reads {offset} bytes of {len(data)}")
    return weights


class LayersModel:
    """A TF.js layers-model's Keras functional graph, run in torch on ``N x C x H x W``.

    Parameters
    ----------
    model_json : Path
        The ``model.json``; its weight shards lie next to it.

    Examples
    --------
    >>> model = LayersModel(Path("x4") / "model.json")  # doctest: +SKIP
    >>> model(torch.zeros(1, 3, 16, 16)).shape  # doctest: +SKIP
    torch.Size([1, 3, 64, 64])
    """

    def __init__(self, model_json: Path) -> None:
        spec = json.loads(Path(model_json).read_text(encoding="utf-8"))
        config = spec["modelTopology"]["model_config"]["config"]
        weights = read_weights(Path(model_json).parent, spec["weightsManifest"])
        self.inputs = [name for name, _, _ in config["input_layers"]]
        self.outputs = [name for name, _, _ in config["output_layers"]]
        self._layers = []  # (name, function, inbound names), in the file's (topological) order
        for layer in config["layers"]:
            if layer["class_name"] == "InputLayer":
                continue
            nodes = layer["inbound_nodes"]
            if len(nodes) != 1:
                raise NotImplementedError(f"layer {layer['name']}: shared layers")
            inbound = [node[0] for node in nodes[0]]
            function = _layer(layer["class_name"], layer["config"], weights)
            self._layers.append((layer["name"], function, inbound))

    def __call__(self, x: torch.Tensor, output: str | None = None) -> torch.Tensor:
        """The graph's output, or the named layer's (the graph is run up to it)."""
        output = output or self.outputs[0]
        if output not in self.layer_names and output not in self.inputs:
            raise ValueError(f"output: no layer {output!r} in the graph")
        values = {self.inputs[0]: x}
        for name, function, inbound in self._layers:
            if output in values:
                break
            values[name] = function([values[i] for i in inbound])
        return values[output]

    @property
    def layer_names(self) -> list[str]:
        """The names of the layers, in the order they run."""
        return [name for name, _, _ in self._layers]


def architecture_of(package: Path) -> str:
    """``"rdn"`` or ``"rrdn"``: what the package's model definition declares."""
    text = (package / "js" / "getModelDefinition.js").read_text(encoding="utf-8")
    found = re.search(r'architecture:\s*"(\w+)"', text)
    if found is None or found.group(1) not in INPUT_RANGE:
        raise ValueError(f"{package}: no known architecture in js/getModelDefinition.js")
    return found.group(1)


class Upscaler:
    """One UpscalerJS network: an ``H x W x 3`` uint8 image to ``sH x sW x 3`` uint8.

    Parameters
    ----------
    name : str
        A key of `MODELS`.
    shared : Path
        The shared folder (its ``models/`` holds the packages).
    """

    def __init__(self, name: str, shared: Path = DEFAULT_SHARED) -> None:
        if name not in MODELS:
            raise ValueError(f"name: one of {sorted(MODELS)}, got {name!r}")
        folder, self.scale = MODELS[name]
        self.name = name
        self.package = Path(shared) / "models" / folder
        self.range = INPUT_RANGE[architecture_of(self.package)]
        self.model = LayersModel(self.package / "models" / f"x{self.scale}" / "model.json")

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image: H x W x 3 uint8 expected, got {image.shape} {image.dtype}")
        with torch.inference_mode():
            x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float()
            x = x * (self.range / 255)
            y = self.model(x)[0] * (255 / self.range)
            return y.clamp(0, 255).round().byte().permute(1, 2, 0).numpy()


def self_check(shared: Path) -> float:
    """Every model with a sample output, on its fixture; prints and returns the largest
    absolute difference in grey levels."""
    worst = 0.0
    for name, (folder, scale) in MODELS.items():
        package = shared / "models" / folder
        sample = package / "assets" / "samples" / f"{scale}x" / "result.png"
        if not sample.is_file():
            continue
        with Image.open(package / "assets" / "fixture.png") as image:
            fixture = np.asarray(image.convert("RGB"))
        with Image.open(sample) as image:
            expected = np.asarray(image.convert("RGB")).astype(int)
        result = Upscaler(name, shared)(fixture).astype(int)
        difference = np.abs(result - expected)
        print(
            f"{name}: {fixture.shape[:2]} -> {result.shape[:2]}, max |diff| "
            f"{difference.max()} grey levels, mean {difference.mean():.3f}"
        )
        worst = max(worst, float(difference.max()))
    return worst


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="_learned_sr.py", description=__doc__.split("\n")[0])
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    parser.add_argument("--self-check", action="store_true", help="compare with the samples")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.self_check:
        parser.error("nothing to do: pass --self-check")
    worst = self_check(args.shared)
    print(f"largest difference: {worst:g} grey levels ({'pass' if worst <= 1 else 'FAIL'})")
    return 0 if worst <= 1 else 1


if __name__ == "__main__":
    sys.exit(main())
