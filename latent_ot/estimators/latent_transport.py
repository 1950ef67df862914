"""LatentOTTransformer: Deep Optimal Transport on the latent patches of images."""

from __future__ import annotations

import copy
import os
from typing import Any

from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from ..encoding import DEFAULT_PATCH_CHUNK_SIZE
from ..io import ImageSource
from ..serialization import read_operator, write_operator
from ._common import check_alpha
from ._latent_checks import check_compatible, check_mergeable, check_params
from ._latent_files import (
    PARAMS_ADDED_LATER,
    fitted_patch_size,
    operator_file_state,
    restore_operator,
)
from ._latent_fitting import LatentFitMixin
from ._latent_transforming import LatentTransformMixin

__all__ = ["PAPER_RECIPE", "LatentOTTransformer"]

PAPER_RECIPE = {
    "vae": "sd-vae-ft-mse",
    "patch_size": 3,
    "stochastic": "auto",
    "fold_window": "uniform",
    "shrinkage": 0.0,
    "max_gain": None,
    "noise_scale": 1.0,
    "residual": False,
    "interpolation": "pixel",
    "low_frequency_sigma": None,
    "zero_shot": False,
    "rtol": None,
}
"""The parameters of the paper's recipe (:meth:`LatentOTTransformer.paper`)."""


class LatentOTTransformer(LatentFitMixin, LatentTransformMixin, TransformerMixin, BaseEstimator):
    """Deep Optimal Transport: make restored images look natural, from a dozen examples.

    ``fit`` encodes a set of restored images (outputs of any restoration model) and a set of
    natural images with a pretrained autoencoder, and fits Gaussian statistics of all their
    overlapping ``C x p x p`` latent patches. ``transform`` encodes new restored images,
    applies the Gaussian optimal transport map to every latent patch, folds the patches back
    by averaging, and decodes (Adrai et al., NeurIPS 2023), keeping the input's coarse content
    (``low_frequency_sigma``); ``alpha`` moves the result back toward the input
    (``interpolation``). Without natural images, ``fit`` takes the natural side from a prior
    (``prior``). :meth:`paper` gives the paper's recipe exactly.

    Parameters
    ----------
    vae : str, os.PathLike, Autoencoder or diffusers model, default="taef2"
        The autoencoder: a preset name (``"taef2"``, bundled with the package and offline;
        ``"sd-vae-ft-mse"``, the paper's, downloaded on first use; ``"pixel"``, ...), a hub
        id, a local directory or an instance; see
        :func:`latent_ot.autoencoders.load_autoencoder`. Loaded on first use, not here.
    prior : "builtin", str, os.PathLike or NaturalPrior, default="builtin"
        The natural side when ``fit`` gets no natural images: ``"builtin"`` is the prior
        shipped for the autoencoder (:func:`latent_ot.priors.builtin_prior`; TAEF2 has one),
        else a file written by :meth:`latent_ot.priors.NaturalPrior.save`. Ignored when
        natural images are given.
    prior_scale : "auto" or int, default="auto"
        Which scale of the prior: ``"auto"`` picks the one nearest to the size of the
        restored images; an int, the one nearest to that long side in pixels. Give the size
        of the source photos when the restored images are crops of larger ones.
    patch_size : int or "auto", default="auto"
        Side ``p`` of the latent patches; the statistics have dimension ``C * p * p``.
        ``"auto"`` is 1 for latents of 16 channels or more (TAEF2) and 3 below (the SD VAE,
        ``"pixel"``), the choice of the quality benchmark (see :ref:`choosing-patch-size`).
    alpha : float, default=0.0
        ``0`` gives the transported images (most realistic), ``1`` returns the inputs
        unchanged; values outside ``[0, 1]`` extrapolate.
    stochastic : {"auto", "never", "always"}, default="auto"
        When to use the stochastic map (noise per patch) instead of the deterministic one;
        ``"auto"``: only when the restored patches' covariance is singular (see ``rtol``).
    fold_window : {"uniform", "gaussian"}, default="uniform"
        Weights of a patch's pixels when overlapping patches are averaged back.
    device : str or torch.device, default="auto"
        Where the autoencoder runs and the statistics live; ``"auto"`` picks CUDA when
        available.
    dtype : torch.dtype, str or None, default="auto"
        Compute dtype of the autoencoder: ``"auto"`` is float16 on CUDA (retried in float32
        where it overflows) and float32 elsewhere; None is float32. Statistics are always
        float64.
    batch_size : int, default=4
        Images encoded together; only images of equal size share a batch.
    sample_latent : bool, default=False
        Encode with a sample of the latent distribution instead of its mean (``AutoencoderKL``
        only). The mean makes the result deterministic.
    patch_chunk_size : int, default=16384
        Patches processed at once: bounds memory whatever the image size.
    tile_size : int, "auto" or None, default="auto"
        Images larger than this many pixels in height or width are encoded and decoded in
        overlapping tiles, which bounds memory (see
        :meth:`latent_ot.autoencoders.Autoencoder.set_tiling`); ``"auto"`` is 512 on CPU and
        1024 on CUDA, None never tiles.
    rtol : float, "auto" or None, default="auto"
        Relative eigenvalue tolerance deciding singularity (see
        :class:`GaussianOTTransformer`): directions in which the restored patches vary less
        than ``rtol`` times their largest variance count as absent: with
        ``stochastic="auto"`` the map drops the input's content there instead of amplifying
        it, and draws their natural variance as noise scaled by ``noise_scale`` (seeded by
        ``random_state``). ``"auto"`` is 0.05 for patches of one latent pixel
        (``patch_size_ == 1``, TAEF2's default), where the quality benchmark chose it, and
        None (``d * eps``, the paper's) for larger ones.
    shrinkage : float or "oas", default=0.0
        Shrink the restored patches' covariance toward the scaled identity before the map is
        fitted (see :class:`GaussianOTTransformer`); ``0`` is the paper's plain map.
    max_gain : float or None, default=None
        Clamp the eigenvalues of the transport matrix (see :class:`GaussianOTTransformer`).
    noise_scale : float or "auto", default="auto"
        The stochastic map's noise, as a fraction in ``[0, 1]`` of the standard deviation
        that gives the natural covariance (see :class:`GaussianOTTransformer`); ``1`` is the
        paper's. ``"auto"`` is 0 for patches of one latent pixel, leaving the directions
        ``rtol`` cuts at the natural mean (see :ref:`choosing-noise`), and 1 for larger ones.
    residual : bool, default=False
        Decode the change only, ``x + D(T(E(x))) - D(E(x))``: what the autoencoder cannot
        reconstruct stays out of it (a second decode; see :mod:`latent_ot.transport`).
    interpolation : {"latent", "pixel"}, default="latent"
        Where ``alpha`` interpolates: between the latents, then decoded,
        ``D((1 - alpha) T(z) + alpha z)`` (one decode per ``alpha`` in :meth:`sweep`); or
        between the images, ``(1 - alpha) D(T(z)) + alpha x``, as in the paper. Latent
        interpolation gave the better perception-distortion curve in the quality benchmark
        (see the Quality page of the documentation). ``alpha = 1`` returns the inputs
        themselves either way.
    low_frequency_sigma : float or None, default=6.0
        Keep the input's coarse content: every output's band below a Gaussian low-pass of
        this many pixels is replaced by the input's, ``y + G * (x - y)``
        (:func:`latent_ot.transport.gaussian_low_pass`), so the transport changes detail,
        not colours and shading, which restorers get right (see
        :ref:`choosing-low-frequencies`). None returns the decoded images as they are.
    zero_shot : bool, default=False
        At transform time, take the restored side's statistics from each image itself
        instead of from the fit (the natural side stays the fitted one, which is not
        changed). Suits low-dimensional patch vectors (few channels or ``patch_size=1``).
    random_state : int, RandomState instance or None, default=None
        Seeds the noise of the stochastic map and the latent samples; the same int gives the
        same output on every call.
    verbose : bool, default=False
        Show progress bars (tqdm) while encoding and transporting.

    Attributes
    ----------
    gaussian_ot_ : GaussianOTTransformer
        The Gaussian transport fitted on the patch vectors (restored as source, natural as
        target); it is what is applied to every patch.
    restored_stats_, natural_stats_ : GaussianStats
        Streaming statistics of the patch vectors of each set.
    w2_ : float
        2-Wasserstein distance between the fitted restored and natural patch Gaussians.
    n_images_restored_, n_images_natural_ : int
        Images seen on each side.
    latent_channels_, factor_ : int
        Latent channels and downsampling factor of the autoencoder used in ``fit``.
    patch_size_, patch_dim_ : int
        The patch side fitted (``patch_size`` with ``"auto"`` resolved) and the patch vector
        length ``latent_channels_ * patch_size_ ** 2``.
    prior_scale_ : int or None
        The scale (long side, px) of the prior used as the natural side; None when natural
        images were given.

    Notes
    -----
    Images may be PIL images, numpy arrays, torch tensors, file paths, a directory or any
    iterable of them, of mixed sizes; ``transform`` returns the kind it was given (see
    :mod:`latent_ot.io`). Sizes that are not multiples of the autoencoder's factor are
    reflect-padded and cropped back, so outputs have exactly the input's size.

    The parameters that shape the fitted map (``prior``, ``prior_scale``, ``patch_size``,
    ``stochastic``, ``rtol``, ``shrinkage``, ``max_gain``, ``noise_scale``) take effect at the
    next ``fit`` or ``partial_fit``; the others at every ``transform``.

    Pickling (``joblib.dump``) stores the statistics and how to re-create the autoencoder
    (its name or path), not its weights; an autoencoder given as an instance is a parameter
    and is pickled with its weights.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> natural = [rng.random((32, 32, 3)) for _ in range(3)]
    >>> restored = [np.clip(0.5 + 0.3 * (im - 0.5), 0, 1) for im in natural]  # washed out
    >>> dot = LatentOTTransformer(vae="pixel", patch_size=3, random_state=0)
    >>> dot = dot.fit(restored, natural)
    >>> out = dot.transform(restored[0])
    >>> out.shape, bool(out.std() > restored[0].std())
    ((32, 32, 3), True)
    """

    def __init__(
        self,
        vae="taef2",
        *,
        prior="builtin",
        prior_scale="auto",
        patch_size="auto",
        alpha=0.0,
        stochastic="auto",
        fold_window="uniform",
        device="auto",
        dtype="auto",
        batch_size=4,
        sample_latent=False,
        patch_chunk_size=DEFAULT_PATCH_CHUNK_SIZE,
        tile_size="auto",
        rtol="auto",
        shrinkage=0.0,
        max_gain=None,
        noise_scale="auto",
        residual=False,
        interpolation="latent",
        low_frequency_sigma=6.0,
        zero_shot=False,
        random_state=None,
        verbose=False,
    ):
        self.vae = vae
        self.prior = prior
        self.prior_scale = prior_scale
        self.patch_size = patch_size
        self.alpha = alpha
        self.stochastic = stochastic
        self.fold_window = fold_window
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.sample_latent = sample_latent
        self.patch_chunk_size = patch_chunk_size
        self.tile_size = tile_size
        self.rtol = rtol
        self.shrinkage = shrinkage
        self.max_gain = max_gain
        self.noise_scale = noise_scale
        self.residual = residual
        self.interpolation = interpolation
        self.low_frequency_sigma = low_frequency_sigma
        self.zero_shot = zero_shot
        self.random_state = random_state
        self.verbose = verbose

    @classmethod
    def paper(cls, **params) -> LatentOTTransformer:
        """The paper's recipe (Adrai et al., 2023): :data:`PAPER_RECIPE`, then ``params``.

        The Stable Diffusion VAE, patch size 3, the plain Gaussian map folded with equal
        weights, and interpolation in pixel space; it gives the same outputs, bit for bit,
        as latent-ot did before any of the other options existed.

        Examples
        --------
        >>> LatentOTTransformer.paper().vae
        'sd-vae-ft-mse'
        >>> LatentOTTransformer.paper(vae="taef2").get_params()["residual"]
        False
        """
        return cls(**(PAPER_RECIPE | params))

    # -- fitting -------------------------------------------------------------------------------

    def fit(self, restored, natural=None):
        """Fit the patch statistics of restored and natural images and the transport map.

        Parameters
        ----------
        restored : images
            Outputs of the restoration model (any accepted kind, sizes may differ).
        natural : images or None
            Natural images (unpaired with ``restored``; any number, any sizes). Passed as
            ``y`` by a :class:`~sklearn.pipeline.Pipeline`. None: the natural side is the
            ``prior`` (the built-in prior of the bundled autoencoder by default), at the
            scale nearest to the size of the restored images.

        Returns
        -------
        self : LatentOTTransformer
        """
        for name in ("restored_stats_", "natural_stats_", "gaussian_ot_"):
            self.__dict__.pop(name, None)
        if natural is None:
            self._check_params()
            self._natural_prior(self._autoencoder())  # fails now rather than after encoding
        return self.partial_fit(restored, natural)

    def partial_fit(self, restored=None, natural=None):
        """Stream more restored images, natural images, or both.

        Statistics are updated batch by batch: a batch that fails (an unreadable image, out
        of memory, an interrupt) leaves them as they were before it, and ``partial_fit`` can
        be called again to resume. The map is refitted at the end of every call once both
        sides have been seen. Inside :func:`latent_ot.distributed.synchronize_fit` the
        statistics of the call are merged across all ranks instead.

        Parameters
        ----------
        restored, natural : images or None

        Returns
        -------
        self : LatentOTTransformer
        """
        self._check_params()
        if restored is None and natural is None:
            raise ValueError("partial_fit needs restored images, natural images or both")
        autoencoder = self._autoencoder()
        if not hasattr(self, "restored_stats_"):
            self._start_fit(autoencoder)
        else:
            check_compatible(self, autoencoder)
        self._accumulate_sides({"restored": restored, "natural": natural}, autoencoder)
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "gaussian_ot_")

    # -- transforming --------------------------------------------------------------------------

    def transform(self, images):
        """Make restored images more photo-realistic (interpolated by ``alpha``).

        Parameters
        ----------
        images : images
            Any accepted kind (see :mod:`latent_ot.io`).

        Returns
        -------
        The same kind as ``images``: PIL in, PIL out; a uint8 array in, a uint8 array out; a
        tensor on the same device; a list for a list, a directory or paths. Each output has
        its input's size. With ``alpha=1`` the inputs come back bit for bit.
        """
        return self.sweep(images, [self.alpha])[0]

    def sweep(self, images, alphas) -> list:
        """Outputs for several ``alpha`` values, running the autoencoder once per image.

        Parameters
        ----------
        images : images
        alphas : sequence of float

        Returns
        -------
        list
            One output per alpha, each as :meth:`transform` would return it.

        Examples
        --------
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> images = [rng.random((16, 16, 3)) for _ in range(2)]
        >>> dot = LatentOTTransformer(vae="pixel").fit(images, [im ** 2 for im in images])
        >>> far, near = dot.sweep(images[0], [0.0, 1.0])
        >>> bool(np.array_equal(near, images[0]))
        True
        """
        check_is_fitted(self)
        self._check_params()
        alphas = [check_alpha(alpha) for alpha in alphas]
        source = ImageSource(images, name="images")
        outputs: list[dict[int, Any]] = [{} for _ in alphas]
        if all(alpha == 1.0 for alpha in alphas):
            for index, item in enumerate(source):
                for per_alpha in outputs:
                    per_alpha[index] = item.original()
        else:
            self._transport_all(source, alphas, outputs)
        return [source.collect([per_alpha[i] for i in sorted(per_alpha)]) for per_alpha in outputs]

    def interpolate(self, alpha: float) -> LatentOTTransformer:
        """A fitted copy with another ``alpha``; shares the loaded autoencoder, no refit.

        Examples
        --------
        >>> import numpy as np
        >>> images = [np.random.default_rng(0).random((16, 16, 3))]
        >>> dot = LatentOTTransformer(vae="pixel").fit(images, images)
        >>> dot.interpolate(0.5).alpha, dot.alpha
        (0.5, 0.0)
        """
        check_is_fitted(self)
        alpha = check_alpha(alpha)
        new = copy.copy(self)
        new.restored_stats_ = self.restored_stats_.copy()
        new.natural_stats_ = self.natural_stats_.copy()
        new.gaussian_ot_ = copy.deepcopy(self.gaussian_ot_)
        new.alpha = alpha
        return new

    def merge(self, other: LatentOTTransformer) -> LatentOTTransformer:
        """An operator fitted on the images of both ``self`` and ``other``.

        Statistics merge exactly, so fitting on disjoint shards (in separate processes, on
        Dask, Ray or Spark workers) and merging on the driver equals one fit on all images.
        ``a + b`` is the same as ``a.merge(b)``. The result takes ``self``'s parameters.

        Examples
        --------
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> restored = [rng.random((16, 16, 3)) ** 2 for _ in range(4)]
        >>> natural = [rng.random((16, 16, 3)) for _ in range(4)]
        >>> a = LatentOTTransformer(vae="pixel").fit(restored[:2], natural[:2])
        >>> b = LatentOTTransformer(vae="pixel").fit(restored[2:], natural[2:])
        >>> whole = LatentOTTransformer(vae="pixel").fit(restored, natural)
        >>> bool(np.allclose((a + b).gaussian_ot_.transport_matrix_,
        ...                  whole.gaussian_ot_.transport_matrix_))
        True
        """
        if not isinstance(other, LatentOTTransformer):
            raise TypeError(f"other must be a LatentOTTransformer, got {type(other).__name__}")
        for operator, name in ((self, "self"), (other, "other")):
            if not hasattr(operator, "restored_stats_"):
                raise NotFittedError(f"{name} has not been fitted: nothing to merge")
        check_mergeable(self, other)
        merged = copy.copy(self)
        merged.restored_stats_ = self.restored_stats_ + other.restored_stats_
        merged.natural_stats_ = self.natural_stats_ + other.natural_stats_
        merged.n_images_restored_ = self.n_images_restored_ + other.n_images_restored_
        merged.n_images_natural_ = self.n_images_natural_ + other.n_images_natural_
        merged._fit_transport()
        return merged

    def __add__(self, other):
        if not isinstance(other, LatentOTTransformer):
            return NotImplemented
        return self.merge(other)

    def _check_params(self) -> None:
        check_params(self)
        self._gaussian_transport()._check_params()

    # -- files -------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted operator to a safe file: statistics, map and parameters, no code.

        Tensors are stored with safetensors and parameters (including how to re-create the
        autoencoder: its preset name, hub id or directory, never its weights) as JSON, with
        checksums; the write is atomic, so an interrupted save leaves any previous file at
        ``path`` intact. Prefer this to ``joblib.dump`` for files you share: loading a
        pickle runs code from the file.

        Raises
        ------
        TypeError
            If ``vae`` is an instance (a file stores how to load an autoencoder, not its
            weights: use joblib then) or ``random_state`` is a RandomState.
        """
        check_is_fitted(self)
        tensors, metadata = operator_file_state(self)
        write_operator(path, tensors, metadata)

    @classmethod
    def load(cls, path: str | os.PathLike) -> LatentOTTransformer:
        """Read an operator written by :meth:`save`; nothing in the file is executed.

        The autoencoder is loaded on first use from the stored ``vae`` (preset, hub id or
        directory), as in ``fit``.

        Raises
        ------
        OperatorFileError
            If the file is not a latent-ot operator, is truncated, was tampered with
            (checksums), or was written by a newer format version.
        """
        tensors, metadata = read_operator(path, expected_kind=cls.__name__)
        operator = cls(**{**PARAMS_ADDED_LATER, **metadata["params"]})
        return restore_operator(operator, tensors, metadata)

    def __getstate__(self) -> dict:
        # The loaded autoencoder is re-created from `vae` after loading; statistics go to the
        # CPU so that a pickle made on a GPU loads anywhere.
        # A copy: on Python 3.11+ the default state is the live __dict__ itself.
        state = dict(super().__getstate__())
        state.pop("_autoencoder_cache", None)
        state.pop("_prior_cache", None)
        for name in ("restored_stats_", "natural_stats_"):
            if state.get(name) is not None:
                state[name] = state[name].copy().to("cpu")
        return state

    def __setstate__(self, state: dict) -> None:
        # Pickles from before patch_size="auto" have no patch_size_; their patch vectors say it.
        if "patch_dim_" in state and "patch_size_" not in state:
            state["patch_size_"] = fitted_patch_size(state["patch_dim_"], state["latent_channels_"])
        state = {**PARAMS_ADDED_LATER, **state}
        super().__setstate__(state)
