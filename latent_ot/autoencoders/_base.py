"""The :class:`Autoencoder` interface: checks, casts, inference mode, memory layout, tiling,
finite outputs.

Subclasses implement ``_encode`` and ``_decode`` on tensors already on the model's device,
dtype and memory layout; everything the contract promises around them is done here once.
"""

from __future__ import annotations

import hashlib
import warnings
from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor

from ..devices import resolve_dtype
from ..exceptions import first_line
from ._layout import _check_memory_format, _resolve_memory_format, _torch_format
from ._tiling import _in_chunks, _one_image_at_a_time, _Tiling

_HALF_DTYPES = (torch.float16, torch.bfloat16)


def _as_output(tensor: Tensor) -> Tensor:
    # Called outside inference mode: the copy is an ordinary tensor that callers may modify in
    # place, which inference tensors forbid; contiguous whatever layout the model computed in.
    return tensor.to(torch.float32, memory_format=torch.contiguous_format, copy=True)


class Autoencoder(_Tiling, ABC):
    """An image autoencoder with a fixed contract on ranges, shapes and dtypes.

    Subclasses implement ``_encode`` and ``_decode`` on tensors already on the model's device
    and dtype, and ``_move`` and ``_set_module_format`` when they hold modules; this class does
    the checks, the casts, the inference mode, the memory layout (see
    :meth:`set_memory_format`), the tiling of large images (see :meth:`set_tiling`) and the
    float32 retry when a half-precision model overflows.

    Outputs are never NaN or infinite: when a float16 / bfloat16 model overflows, the batch is
    computed again in float32 (with a ``RuntimeWarning``); when that does not help either, a
    ``ValueError`` names the autoencoder.

    Attributes
    ----------
    factor : int
        Spatial downsampling factor: an ``H x W`` image has an ``H/factor x W/factor`` latent.
    latent_channels : int
        Channels of the latent.
    name : str
        Human-readable name, used in error messages.
    device : torch.device
        Where the model runs and where outputs are returned.
    dtype : torch.dtype
        The model's compute dtype; inputs are cast to it, outputs are float32.
    sample_latent : bool
        Whether :meth:`encode` samples the latent distribution instead of taking its mean.
    tile_size : int or None
        Largest tile, in pixels; None: never tiled (see :meth:`set_tiling`).
    tile_overlap : int
        Pixels shared by neighbouring tiles.
    memory_budget : int or None
        Bytes one pass may take with ``tile_size="auto"``; None otherwise.
    memory_format : str
        ``"channels_last"`` or ``"contiguous"``: the layout the model computes in.

    Examples
    --------
    >>> import torch
    >>> from latent_ot.autoencoders import PixelAutoencoder
    >>> ae = PixelAutoencoder()
    >>> images = torch.rand(2, 3, 8, 8)
    >>> latents = ae.encode(images)
    >>> latents.shape, latents.dtype
    (torch.Size([2, 3, 8, 8]), torch.float32)
    >>> torch.equal(ae.decode(latents), images)
    True
    """

    factor: int
    latent_channels: int
    name: str
    device: torch.device
    dtype: torch.dtype
    sample_latent: bool = False
    # The preset name, hub id or directory it was loaded from (load_autoencoder sets it); what
    # an operator file stores to load it again. None for an instance built in code.
    source: str | None = None
    # Whether memory_format="auto" may choose channels-last: convolutional adapters only.
    _convolutional: bool = False

    def __init__(
        self,
        *,
        factor: int,
        latent_channels: int,
        name: str,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.factor = int(factor)
        self.latent_channels = int(latent_channels)
        self.name = name
        self.device = torch.device(device)
        self.dtype = dtype
        self.set_tiling("auto")
        self.set_memory_format("auto")

    # ---- memory layout -------------------------------------------------------------------

    def set_memory_format(self, memory_format: str = "auto") -> Autoencoder:
        """Choose the memory layout the model computes in: channels-last or contiguous.

        Outputs are the same either way, to float precision (about 1e-6), and are returned
        contiguous; only the speed differs.

        Parameters
        ----------
        memory_format : {"auto", "channels_last", "contiguous"}, default "auto"
            ``"auto"``: :data:`AUTO_MEMORY_FORMATS` for the device (channels-last on the CPU,
            where it makes the TAESD family and the Stable Diffusion VAE faster)
            for the convolutional adapters of this package, contiguous otherwise; re-read
            after :meth:`to`.

        Returns
        -------
        Autoencoder
            ``self``, changed in place.

        Examples
        --------
        >>> from latent_ot.autoencoders import load_autoencoder
        >>> load_autoencoder("taef2").memory_format
        'channels_last'
        >>> load_autoencoder("taef2").set_memory_format("contiguous").memory_format
        'contiguous'
        """
        self._memory_format_request = _check_memory_format(memory_format)
        self._set_module_format(_torch_format(self.memory_format))
        return self

    @property
    def memory_format(self) -> str:
        """``"channels_last"`` or ``"contiguous"``, ``"auto"`` resolved for the device."""
        return _resolve_memory_format(self._memory_format_request, self.device, self._convolutional)

    def _set_module_format(self, memory_format: torch.memory_format) -> None:
        """Lay out the modules' weights in ``memory_format``; nothing for a model without."""

    # ---- encode / decode -----------------------------------------------------------------

    def encode(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Encode RGB images in ``[0, 1]`` to latents.

        Parameters
        ----------
        images : Tensor
            Float tensor ``N x 3 x H x W`` in ``[0, 1]``, on any device; ``H`` and ``W`` must be
            multiples of :attr:`factor` (pad the images first, nothing is cropped here).
        generator : torch.Generator, optional
            Random generator for the latent sample; used only when :attr:`sample_latent` is
            True, where the same seed gives the same latents.

        Returns
        -------
        Tensor
            Float32 latents ``N x latent_channels x H/factor x W/factor`` on :attr:`device`.

        Raises
        ------
        ValueError
            If ``images`` has the wrong shape or dtype, holds NaN or infinite values, or the
            model gives NaN or infinite latents even in float32.
        """
        _check_images(images, self.factor)
        latents = self._run_finite("encode", self._encode_any_size, images, generator)
        return _as_output(latents)

    def decode(self, latents: Tensor) -> Tensor:
        """Decode latents to RGB images clamped to ``[0, 1]``.

        Parameters
        ----------
        latents : Tensor
            Float tensor ``N x latent_channels x h x w``, on any device.

        Returns
        -------
        Tensor
            Float32 images ``N x 3 x h*factor x w*factor`` in ``[0, 1]`` on :attr:`device`.

        Raises
        ------
        ValueError
            If ``latents`` has the wrong shape, holds NaN or infinite values, or the model
            gives NaN or infinite images even in float32.
        """
        if not isinstance(latents, Tensor):
            raise TypeError(f"latents must be a torch.Tensor, got {type(latents).__name__}")
        if latents.ndim != 4 or latents.shape[1] != self.latent_channels:
            raise ValueError(
                f"latents must have shape N x {self.latent_channels} x h x w for {self.name}, "
                f"got {tuple(latents.shape)}"
            )
        images = self._run_finite("decode", self._decode_any_size, latents)
        # Outside inference mode, so the clamped copy is an ordinary tensor (see _as_output);
        # written into a contiguous float32 tensor whatever the model's layout and dtype.
        images = images if images.dtype == torch.float32 else images.float()
        clamped = torch.empty(images.shape, dtype=torch.float32, device=images.device)
        return torch.clamp(images, 0, 1, out=clamped)

    def _run_finite(self, what: str, run: Any, inputs: Tensor, *args: Any) -> Tensor:
        """``run(inputs, *args)`` in inference mode, never returning NaN or infinite values.

        A float16 / bfloat16 model that overflows is run again in float32; the modules are cast
        for that pass only (outside inference mode, so their weights stay ordinary tensors).
        """
        kind = "images" if what == "encode" else "latents"
        if not _all_finite(inputs):
            raise ValueError(f"{kind} must be finite: they hold NaN or infinite values")
        layout = _torch_format(self.memory_format)
        with torch.inference_mode():
            try:
                outputs = run(inputs.to(self.device, self.dtype, memory_format=layout), *args)
            except RuntimeError as err:
                if self.dtype not in _HALF_DTYPES:
                    raise
                # Some kernels exist in half precision only on some processors (torch's
                # bfloat16 attention needs AVX-512 on the CPU): say which setting to change.
                raise RuntimeError(
                    f"dtype: {self.name} cannot {what} in {self.dtype} on {self.device} with "
                    f"this torch build and processor ({first_line(err)}); load it with "
                    "dtype=torch.float32"
                ) from err
            if _all_finite(outputs):
                return outputs
        retried = self.dtype in _HALF_DTYPES
        if retried:
            warnings.warn(
                f"{self.name}: {what} overflowed in {self.dtype} (NaN or infinite values); "
                f"computed again in float32. Load the autoencoder with dtype=torch.float32 to "
                f"avoid the wasted pass.",
                RuntimeWarning,
                stacklevel=3,
            )
            self._move(self.device, torch.float32)
            try:
                with torch.inference_mode():
                    retried_inputs = inputs.to(self.device, torch.float32, memory_format=layout)
                    outputs = run(retried_inputs, *args)
            finally:
                self._move(self.device, self.dtype)
            if _all_finite(outputs):
                return outputs
        again = " and again in float32" if retried else ""
        raise ValueError(
            f"{self.name}: {what} gave NaN or infinite values in {self.dtype}{again} from "
            f"finite {kind}; the model overflows on these inputs or its weights are damaged"
        )

    def _encode_any_size(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        per_pass, tiled = self._passes(*images.shape[:1], *images.shape[-2:])
        if tiled:
            return _one_image_at_a_time(lambda image: self._encode_tiled(image, generator), images)
        if per_pass < images.shape[0]:
            return _in_chunks(lambda batch: self._encode(batch, generator), images, per_pass)
        return self._encode(images, generator)

    def _decode_any_size(self, latents: Tensor) -> Tensor:
        height, width = (size * self.factor for size in latents.shape[-2:])
        per_pass, tiled = self._passes(latents.shape[0], height, width)
        if tiled:
            return _one_image_at_a_time(self._decode_tiled, latents)
        if per_pass < latents.shape[0]:
            return _in_chunks(self._decode, latents, per_pass)
        return self._decode(latents)

    def _encode_tiled(self, image: Tensor, generator: torch.Generator | None) -> Tensor:
        """One large image -> latents, tile by tile; exact for a model of convolutions only.

        Adapters whose model has wider reach (normalisation, attention) override it.
        """
        return self._tile_images(lambda tile: self._encode(tile, generator), image)

    def _decode_tiled(self, latents: Tensor) -> Tensor:
        """One large latent -> image, tile by tile (see :meth:`_encode_tiled`)."""
        return self._tile_latents(self._decode, latents)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | str | None = None
    ) -> Autoencoder:
        """Move the model to ``device`` and/or cast it to ``dtype`` (None keeps the current one).

        Returns
        -------
        Autoencoder
            ``self``, moved in place.
        """
        device = self.device if device is None else torch.device(device)
        dtype = self.dtype if dtype is None else resolve_dtype(dtype, device)
        if dtype != self.dtype:
            self.fingerprint()  # of the weights as loaded: a cast keeps their provenance
        self._move(device, dtype)
        self.device, self.dtype = device, dtype
        self._set_module_format(_torch_format(self.memory_format))  # "auto" follows the device
        return self

    @abstractmethod
    def _encode(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        """Images in [0, 1] on the model's device and dtype -> latents."""

    @abstractmethod
    def _decode(self, latents: Tensor) -> Tensor:
        """Latents on the model's device and dtype -> images, roughly in [0, 1]."""

    def _move(self, device: torch.device, dtype: torch.dtype) -> None:
        """Move the underlying modules; nothing to do for a model without weights."""

    def fingerprint(self) -> str:
        """The sha256 of this autoencoder's weights, which files record as their provenance.

        Computed once per instance by :func:`weights_fingerprint` (cached, also across a
        pickle), before the first cast by :meth:`to`: copies of the same weights on any device
        and in float32, float16 or float64 have the same fingerprint.

        Examples
        --------
        >>> from latent_ot.autoencoders import PixelAutoencoder
        >>> PixelAutoencoder().fingerprint() == PixelAutoencoder().fingerprint()
        True
        """
        cached = self.__dict__.get("_fingerprint")
        if cached is None:
            cached = self._fingerprint = weights_fingerprint(self)
        return cached

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, factor={self.factor}, "
            f"latent_channels={self.latent_channels}, device={self.device}, dtype={self.dtype}, "
            f"tile_size={self.tile_size}, memory_format={self.memory_format!r})"
        )


def weights_fingerprint(owner: Any) -> str:
    """The sha256 (hex) of the weights of a torch module, or of the modules an object holds.

    The state dicts of ``owner`` (a module) or of the modules among its attributes (an
    :class:`Autoencoder`), in sorted order of attribute and tensor names: each tensor's name,
    shape and bytes. Floating tensors are hashed at float16 precision, as the bytes of their
    float16 rounding, so weights loaded in float32 and the same weights loaded or cast to
    float16 (or float64) give one fingerprint, and hashing reads half the bytes of float32;
    bfloat16 and integer tensors are hashed in their own dtype. Class name, factor and latent
    channels are hashed too, which tells apart autoencoders without weights.

    Examples
    --------
    >>> import torch
    >>> layer = torch.nn.Linear(2, 2)
    >>> weights_fingerprint(layer) == weights_fingerprint(layer.double())
    True
    """
    digest = hashlib.sha256(type(owner).__qualname__.encode())
    if isinstance(owner, torch.nn.Module):
        modules = [("", owner)]
    else:
        shape = (getattr(owner, "factor", None), getattr(owner, "latent_channels", None))
        digest.update(repr(shape).encode())
        modules = sorted(vars(owner).items())
    for prefix, module in modules:
        if not isinstance(module, torch.nn.Module):
            continue
        for name, tensor in sorted(module.state_dict().items()):
            tensor = tensor.detach()
            if tensor.dtype in (torch.float32, torch.float64, torch.float16):
                tensor = tensor.to(torch.float16)
            raw = tensor.to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
            digest.update(f"{prefix}.{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(memoryview(raw))
    return digest.hexdigest()


def _all_finite(tensor: Tensor) -> bool:
    """Whether no value of ``tensor`` is NaN or infinite, from one float64 sum.

    A NaN or an infinity makes the sum NaN or infinite, and float64 cannot overflow on a sum of
    float32 or half-precision values; the sum reads the tensor once and allocates nothing of
    its size, where ``isfinite(tensor).all()`` writes a mask as large and reads it again.
    Float64 tensors, whose sum could overflow, are checked value by value.
    """
    if tensor.dtype == torch.float64:
        return bool(torch.isfinite(tensor).all())
    return bool(torch.isfinite(tensor.sum(dtype=torch.float64)))


def _check_images(images: Any, factor: int) -> None:
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape N x 3 x H x W, got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point in [0, 1], got dtype {images.dtype}")
    height, width = images.shape[-2:]
    if height % factor or width % factor:
        raise ValueError(
            f"images height and width must be multiples of the autoencoder's factor {factor}, "
            f"got {height} x {width}; pad the images first (e.g. reflect padding)"
        )
