"""LatentOTTransformer: Deep Optimal Transport on the latent patches of images."""

from __future__ import annotations

import contextlib
import copy
import math
import os
import warnings
from collections.abc import Callable, Iterator
from numbers import Integral, Real
from typing import Any, ClassVar

import torch
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from .. import memory
from ..autoencoders import Autoencoder, load_autoencoder
from ..devices import check_device_available, resolve_device
from ..distributed import gather_stats, report_failure, sum_counts, synchronizing
from ..exceptions import FitWarning, IncompatibleAutoencoderError
from ..images import ImageSource
from ..patches import patch_dim
from ..pipeline.apply import INTERPOLATIONS, SHIFTS, grid_shifts, sweep_images
from ..pipeline.statistics import image_batches, latent_patch_stats, name_of, stack_pixels
from ..priors import NaturalPrior, has_builtin_prior, load_prior, restored_image_side
from ..provenance import autoencoder_provenance, check_same_autoencoder
from ..recipes import PAPER, PAPER_MAP, auto_map, auto_patch_size
from ..serialization import read_operator, write_operator
from ..stats import GaussianStats
from ..validation import ALPHA, RANDOM_STATE, check_constraints, check_params, torch_generator
from ._file_state import json_params, params_from_file, stats_from_tensors, stats_tensors
from .gaussian_transport import GaussianOTTransformer

__all__ = ["MAX_LOW_FREQUENCY_SIGMA", "LatentOTTransformer"]

MAX_LOW_FREQUENCY_SIGMA = 1000.0
"""The largest ``low_frequency_sigma`` accepted, in pixels. The low-pass costs time and memory
in proportion to sigma (its kernel has ``8 sigma + 1`` taps); beyond the size of any photo it
keeps the input's mean colour only, which a sigma of 1000 already does."""

_TRANSPORT_PREFIX = "transport."


class LatentOTTransformer(TransformerMixin, BaseEstimator):
    """Deep Optimal Transport: make restored images look natural, from a dozen examples.

    ``fit`` encodes a set of restored images (outputs of any restoration model) and a set of
    natural images with a pretrained autoencoder, and fits Gaussian statistics of all their
    overlapping ``C x p x p`` latent patches. ``transform`` encodes new restored images,
    applies the Gaussian optimal transport map to every latent patch, folds the patches back
    by averaging, and decodes (Adrai et al., NeurIPS 2023), keeping the input's coarse content
    (``low_frequency_sigma``); ``alpha`` moves the result back toward the input
    (``interpolation``). Without natural images, ``fit`` takes the natural side from a prior
    (``prior``). :meth:`paper` gives the paper's recipe exactly; the defaults and the rules of
    ``"auto"`` are in :mod:`latent_ot.recipes`, with the reason for each.

    Parameters
    ----------
    vae : str, os.PathLike, Autoencoder or diffusers model, default="taef2"
        The autoencoder: a preset name (``"taef2"``, bundled with the package and offline;
        ``"sd-vae-ft-mse"``, the paper's, downloaded on first use; ``"pixel"``, ...), a hub
        id or a local directory, loaded on first use with
        :func:`~latent_ot.autoencoders.load_autoencoder`'s defaults; or an instance, used as
        it is. The autoencoder's own settings (compute ``dtype``, ``tile_size``,
        ``sample_latent``) travel with it: pass
        ``vae=load_autoencoder("taef2", dtype="float16", tile_size=512)`` to choose them.
    prior : "builtin", str, os.PathLike or NaturalPrior, default="builtin"
        The natural side when ``fit`` gets no natural images: ``"builtin"`` is the prior
        shipped for the autoencoder (:func:`latent_ot.priors.builtin_prior`; TAEF2 has one),
        else a file written by :meth:`latent_ot.priors.NaturalPrior.save`, or a prior. Its
        scale nearest to the size of the restored images is used; to pin one, pass
        ``prior=NaturalPrior.at_scale(side)`` (crops of large photos call for the photos'
        size). Ignored when natural images are given.
    patch_size : int or "auto", default="auto"
        Side ``p`` of the latent patches; the statistics have dimension ``C * p * p``.
        ``"auto"``: :func:`latent_ot.recipes.auto_patch_size` (1 for latents of 16 channels
        or more, such as TAEF2's; 3 below).
    alpha : float in [-10, 10], default=0.25
        ``0`` gives the transported images, ``1`` returns the inputs unchanged; values
        outside ``[0, 1]`` extrapolate. The default, a quarter of the way back to the input,
        was chosen on the quality benchmark's validation split (:doc:`/quality`): on its
        learned and classical restorers it kept more PSNR than ``0`` and, on most of them,
        came out at least as natural. The paper's setting is ``0``.
    low_frequency_sigma : float in (0, 1000] or None, default=6.0
        Keep the input's coarse content: every output's band below a Gaussian low-pass of
        this many pixels is replaced by the input's, ``y + G * (x - y)``
        (:func:`latent_ot.pipeline.gaussian_low_pass`), so the transport changes detail, not
        colours and shading. None returns the decoded images as they are. Its cost grows
        with sigma, hence the maximum (:data:`MAX_LOW_FREQUENCY_SIGMA`).
    interpolation : {"latent", "pixel"}, default="latent"
        Where ``alpha`` interpolates: between the latents, then decoded,
        ``D((1 - alpha) T(z) + alpha z)`` (one decode per ``alpha`` in :meth:`sweep`); or
        between the images, ``(1 - alpha) D(T(z)) + alpha x``, as in the paper. ``alpha = 1``
        returns the inputs themselves either way.
    shifts : {1, 2, 4, 16}, default=1
        Cycle spinning: transform this many copies of each image, shifted by fractions of
        the latent grid (:func:`latent_ot.pipeline.grid_shifts`), and average the outputs
        shifted back. It cancels the faint pattern with the latent grid's period that a small
        decoder can draw, keeping the transported detail; each shift costs one more encode
        and decode (see :ref:`choosing-shifts`). 1, the default, transforms the image as it
        is: on the quality benchmark's validation split, 2 lowered the grid's trace further
        at twice the time, but cost part of the realism gain on three of its four tasks.
    transport : GaussianOTTransformer or None, default=None
        The Gaussian map applied to the patch vectors, with its settings (``stochastic``,
        ``rtol``, ``noise_scale``); cloned at ``fit`` into ``gaussian_ot_``, its ``alpha``
        and ``random_state`` replaced by this operator's. Set its parameters as
        scikit-learn's nested estimators: ``set_params(transport__rtol=0.1)``. None: the map
        :func:`latent_ot.recipes.auto_map` gives for the fitted patch size.
    device : str or torch.device, default="auto"
        Where the autoencoder runs and the statistics live; ``"auto"`` picks CUDA when
        available.
    batch_size : int, default=4
        Images encoded together; only images of equal size share a batch.
    random_state : None, int in [0, 2**32 - 1], RandomState or Generator, default=None
        Seeds the noise of a stochastic map and latent samples; the same int gives the same
        output on every call.
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
    autoencoder_provenance_ : dict or None
        The name and weights' fingerprint of the autoencoder of the fit: another one is
        refused (see :meth:`load`'s ``check_autoencoder``).

    Notes
    -----
    Images may be PIL images, numpy arrays, torch tensors, file paths, a directory or any
    iterable of them, of mixed sizes; ``transform`` returns the kind it was given (see
    :mod:`latent_ot.images`). Sizes that are not multiples of the autoencoder's factor are
    reflect-padded and cropped back, so outputs have exactly the input's size.

    ``vae``, ``prior``, ``patch_size`` and ``transport`` shape the fitted map and take effect
    at the next ``fit``; the others at every ``transform``.

    Pickling (``joblib.dump``) stores the statistics and how to re-create the autoencoder
    (its name or path), not its weights; an autoencoder given as an instance is a parameter
    and is pickled with its weights. :meth:`save` writes a file that runs no code on load.

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

    The map's settings are those of a nested estimator:

    >>> dot.set_params(transport=GaussianOTTransformer(), transport__rtol=0.1).transport.rtol
    0.1
    """

    _parameter_constraints: ClassVar[dict[str, list]] = {
        "vae": [str, os.PathLike, HasMethods(["encode", "decode"])],
        "prior": [str, os.PathLike, NaturalPrior],
        "patch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "alpha": ALPHA,
        "low_frequency_sigma": [
            None,
            Interval(Real, 0, MAX_LOW_FREQUENCY_SIGMA, closed="right"),
        ],
        "interpolation": [StrOptions(set(INTERPOLATIONS))],
        "shifts": SHIFTS,
        "transport": [None, GaussianOTTransformer],
        "device": [str, torch.device],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "random_state": RANDOM_STATE,
        "verbose": ["boolean"],
    }

    def __init__(
        self,
        vae="taef2",
        *,
        prior="builtin",
        patch_size="auto",
        alpha=0.25,
        low_frequency_sigma=6.0,
        interpolation="latent",
        shifts=1,
        transport=None,
        device="auto",
        batch_size=4,
        random_state=None,
        verbose=False,
    ):
        self.vae = vae
        self.prior = prior
        self.patch_size = patch_size
        self.alpha = alpha
        self.low_frequency_sigma = low_frequency_sigma
        self.interpolation = interpolation
        self.shifts = shifts
        self.transport = transport
        self.device = device
        self.batch_size = batch_size
        self.random_state = random_state
        self.verbose = verbose

    @classmethod
    def paper(cls, **params) -> LatentOTTransformer:
        """The paper's recipe (Adrai et al., 2023): :data:`latent_ot.recipes.PAPER` with the
        map :data:`latent_ot.recipes.PAPER_MAP`, then ``params``.

        The Stable Diffusion VAE, patch size 3, the plain Gaussian map folded with equal
        weights, and interpolation in pixel space; it gives the same outputs, bit for bit,
        as latent-ot did before any other option existed.

        Examples
        --------
        >>> LatentOTTransformer.paper().vae
        'sd-vae-ft-mse'
        >>> LatentOTTransformer.paper(vae="taef2").get_params()["transport__noise_scale"]
        1.0
        """
        return cls(**({**PAPER, "transport": GaussianOTTransformer(**PAPER_MAP)} | params))

    # -- fitting -------------------------------------------------------------------------------

    def fit(self, restored, natural=None):
        """Fit the patch statistics of restored and natural images and the transport map.

        All or nothing: a ``fit`` that raises (an unreadable image, out of memory, an
        interrupt) leaves the operator as it was before the call.

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
        self._validate_params()
        before = {name: self.__dict__.pop(name) for name in _fitted_state(self)}
        try:
            if natural is None:
                self._natural_prior(self._autoencoder())  # fails now rather than after encoding
            self.partial_fit(restored, natural)
        except BaseException:
            for name in _fitted_state(self):
                del self.__dict__[name]
            self.__dict__.update(before)
            raise
        self._warn_if_few_vectors()
        return self

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
        self._validate_params()
        if restored is None and natural is None:
            raise ValueError("partial_fit needs restored images, natural images or both")
        autoencoder = self._autoencoder()
        if not hasattr(self, "restored_stats_"):
            self._start_fit(autoencoder)
        else:
            self._check_compatible(autoencoder)
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
            Any accepted kind (see :mod:`latent_ot.images`).

        Returns
        -------
        The same kind as ``images``: PIL in, PIL out; a uint8 array in, a uint8 array out; a
        tensor on the same device; a list for a list, a directory or paths. Each output has
        its input's size. With ``alpha=1`` the inputs come back bit for bit.
        """
        return self.sweep(images, [self.alpha])[0]

    def sweep(self, images, alphas, *, on_encoded: Callable | None = None) -> list:
        """Outputs for several ``alpha`` values, encoding each image once (once per shift).

        Parameters
        ----------
        images : images
        alphas : sequence of float
        on_encoded : callable, optional
            Called as ``on_encoded(index, latents)`` with the latents (``1 x C x h x w``) of
            ``images[index]`` as the transport encodes it, unshifted, in the autoencoder's
            own way (:func:`~latent_ot.pipeline.statistics.encode_padded`), so that a caller
            can measure the inputs (the ``alpha = 1`` row) without encoding them again, as
            ``latent-ot sweep`` does (`latent_ot.metrics.Evaluator`, ``latent_stats``). Not
            called when every alpha is 1: nothing is encoded then.

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
        >>> encoded = {}
        >>> _ = dot.sweep(images, [0.0], on_encoded=encoded.__setitem__)
        >>> sorted(encoded), tuple(encoded[1].shape)
        ([0, 1], (1, 3, 16, 16))
        """
        check_is_fitted(self)
        self._validate_params()
        alphas = [_check_alpha(alpha) for alpha in alphas]
        source = ImageSource(images, name="images")
        outputs: list[dict[int, Any]] = [{} for _ in alphas]
        if all(alpha == 1.0 for alpha in alphas):
            for index, item in enumerate(source):
                for per_alpha in outputs:
                    per_alpha[index] = item.original()
        else:
            self._transport_all(source, alphas, outputs, on_encoded)
        return [source.collect([per_alpha[i] for i in sorted(per_alpha)]) for per_alpha in outputs]

    def interpolate(self, alpha: float) -> LatentOTTransformer:
        """A fitted copy with another ``alpha``; shares the loaded autoencoder, no refit.

        Examples
        --------
        >>> import numpy as np
        >>> images = [np.random.default_rng(0).random((16, 16, 3))]
        >>> dot = LatentOTTransformer(vae="pixel").fit(images, images)
        >>> dot.interpolate(0.5).alpha, dot.alpha
        (0.5, 0.25)
        """
        check_is_fitted(self)
        alpha = _check_alpha(alpha)
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
        mine, theirs = self._fit_signature(), other._fit_signature()
        if mine != theirs:
            raise IncompatibleAutoencoderError(
                "cannot merge operators fitted differently: (vae, patch_size, latent "
                f"channels, factor) are {mine} and {theirs}"
            )
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

    def reusing_freed_memory(self) -> contextlib.AbstractContextManager[bool]:
        """A block in which this operator's calls keep the memory they free for the next.

        Each call of ``fit``, ``partial_fit``, ``transform`` and ``sweep`` already runs in such
        a block and gives the memory back at its end; a loop of calls (one file at a time, as
        ``latent-ot transform`` runs) is faster in one block around the whole loop, which keeps
        the memory between calls. It is :func:`latent_ot.memory.reusing_freed_memory` for this
        operator's autoencoder: that module says what it changes and how to decline it.

        Returns
        -------
        contextlib.AbstractContextManager[bool]
            Yields whether freed memory is kept for reuse inside the block.

        Examples
        --------
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> images = [rng.random((32, 32, 3)) for _ in range(2)]
        >>> operator = LatentOTTransformer(vae="pixel", random_state=0).fit(images, images)
        >>> with operator.reusing_freed_memory():
        ...     outputs = [operator.transform(image) for image in images]
        >>> [output.shape for output in outputs]
        [(32, 32, 3), (32, 32, 3)]
        """
        return memory.reusing_freed_memory(self._autoencoder())

    # -- files -------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted operator to a safe file: statistics, map and parameters, no code.

        Tensors are stored with safetensors and parameters (including how to re-create the
        autoencoder: its preset name, hub id or directory, never its weights) as JSON, with
        checksums; the write is atomic, so an interrupted save leaves any previous file at
        ``path`` intact. Prefer this to ``joblib.dump`` for files you share: loading a
        pickle runs code from the file. An autoencoder instance is stored by the name or
        path :func:`~latent_ot.autoencoders.load_autoencoder` loaded it from, and loaded
        again from it with the default settings.

        Raises
        ------
        TypeError
            If ``vae`` is an instance built in code (a file stores how to load an
            autoencoder, not its weights: use joblib then), ``prior`` is a NaturalPrior
            (save it and pass its path) or ``random_state`` is not None or an int.
        """
        check_is_fitted(self)
        params = self.get_params(deep=False)
        params["vae"] = _vae_reference(self.vae)
        transport = params.pop("transport")
        params = json_params(params)
        params["transport"] = None if transport is None else json_params(transport.get_params())
        tensors = stats_tensors("restored", self.restored_stats_)
        tensors |= stats_tensors("natural", self.natural_stats_)
        transport_tensors, transport_metadata = self.gaussian_ot_.file_state(_TRANSPORT_PREFIX)
        metadata = {
            "kind": type(self).__name__,
            "params": params,
            "counts": {
                "restored": self.restored_stats_.count,
                "natural": self.natural_stats_.count,
                "restored_images": self.n_images_restored_,
                "natural_images": self.n_images_natural_,
            },
            "latent_channels": self.latent_channels_,
            "factor": self.factor_,
            "patch_dim": self.patch_dim_,
            "patch_size": self.patch_size_,
            "prior_scale": self.prior_scale_,
            "transport": transport_metadata,
        }
        if self.autoencoder_provenance_ is not None:
            metadata["autoencoder"] = self.autoencoder_provenance_
        write_operator(path, tensors | transport_tensors, metadata)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        sha256: str | None = None,
        check_autoencoder: bool = True,
    ) -> LatentOTTransformer:
        """Read an operator written by :meth:`save`; nothing in the file is executed.

        The autoencoder is loaded on first use from the stored ``vae`` (preset, hub id or
        directory), as in ``fit``. Every tensor and key is checked for what it means (see
        :doc:`/security`).

        Parameters
        ----------
        path : str or os.PathLike
        sha256 : str or None
            The published sha256 of the whole file: any other file is refused.
        check_autoencoder : bool, default=True
            Refuse to use the operator with an autoencoder whose weights differ from those
            of the fit (the file records their fingerprint). ``False`` declines the check,
            for an autoencoder known to give the same latents (a converted copy, say).

        Raises
        ------
        OperatorFileError
            If the file is not a latent-ot operator, is truncated, was tampered with
            (checksums), its contents are not valid, its sha256 is not ``sha256``, or it was
            written by another version of latent-ot.
        """
        # sha256: the published digest of the whole file, which pins it (read_operator)
        tensors, metadata = read_operator(path, expected_kind=cls.__name__, sha256=sha256)
        params = dict(params_from_file(cls, metadata["params"], path))
        if params["transport"] is not None:
            transport = params_from_file(GaussianOTTransformer, params["transport"], path)
            params["transport"] = GaussianOTTransformer(**transport)
        operator = cls(**params)
        counts = metadata["counts"]
        operator.latent_channels_ = metadata["latent_channels"]
        operator.factor_ = metadata["factor"]
        operator.patch_dim_ = metadata["patch_dim"]
        operator.patch_size_ = metadata["patch_size"]
        operator.restored_stats_ = stats_from_tensors(tensors, "restored", counts["restored"])
        operator.natural_stats_ = stats_from_tensors(tensors, "natural", counts["natural"])
        operator.n_images_restored_ = counts["restored_images"]
        operator.n_images_natural_ = counts["natural_images"]
        operator.prior_scale_ = metadata["prior_scale"]
        operator.autoencoder_provenance_ = (
            metadata.get("autoencoder") if check_autoencoder else None
        )
        operator.gaussian_ot_ = operator._unfitted_map()
        operator.gaussian_ot_.restore_file_state(tensors, metadata["transport"], _TRANSPORT_PREFIX)
        operator.w2_ = operator.gaussian_ot_.w2_
        return operator

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

    # -- the pieces of fit -----------------------------------------------------------------------

    def _validate_params(self) -> None:
        """Check every parameter (see :func:`latent_ot.validation.check_params`), the device
        against this torch build, and the nested ``transport``'s own parameters."""
        check_params(self)
        check_device_available(resolve_device(self.device))
        if self.transport is not None:
            self.transport._validate_params()

    def _start_fit(self, autoencoder: Autoencoder) -> None:
        device = resolve_device(self.device)
        self.latent_channels_ = autoencoder.latent_channels
        self.factor_ = autoencoder.factor
        self.autoencoder_provenance_ = autoencoder_provenance(autoencoder)
        self.patch_size_ = self._resolved_patch_size(self.latent_channels_)
        self.patch_dim_ = patch_dim(self.latent_channels_, self.patch_size_)
        self.restored_stats_ = GaussianStats(self.patch_dim_, device=device)
        self.natural_stats_ = GaussianStats(self.patch_dim_, device=device)
        self.n_images_restored_ = 0
        self.n_images_natural_ = 0

    def _resolved_patch_size(self, latent_channels: int) -> int:
        if self.patch_size == "auto":
            return auto_patch_size(latent_channels)
        return int(self.patch_size)

    def _accumulate_sides(self, sides: dict, autoencoder: Autoencoder) -> None:
        """Add each side's images (None: none) to its statistics, across ranks when
        synchronizing; then refit the map, also after a failed batch."""
        try:
            # One block for all batches: memory freed by one is reused by the next.
            with memory.reusing_freed_memory(autoencoder):
                if synchronizing():
                    self._accumulate_across_ranks(sides, autoencoder)
                else:
                    for name, images in sides.items():
                        if images is not None:
                            self._accumulate(name, images, autoencoder)
        finally:
            self._fit_transport()

    def _accumulate(self, name: str, images, autoencoder: Autoencoder) -> None:
        """Merge the patches of ``images`` into the ``name`` side, one batch at a time."""
        stats = getattr(self, f"{name}_stats_").to(resolve_device(self.device))
        count = 0
        for batch_stats, n_images in self._batch_stats(name, images, autoencoder):
            stats.merge(batch_stats)
            setattr(self, f"n_images_{name}_", getattr(self, f"n_images_{name}_") + n_images)
            count += n_images
        if count == 0:
            raise ValueError(f"{name} is empty: expected at least one image")

    def _accumulate_across_ranks(self, sides: dict, autoencoder: Autoencoder) -> None:
        """Accumulate this rank's share of the call, then merge every rank's, in rank order."""
        device = resolve_device(self.device)
        local = {name: GaussianStats(self.patch_dim_, device=device) for name in sides}
        counts = dict.fromkeys(sides, 0)
        try:
            for name, images in sides.items():
                for batch_stats, n_images in self._batch_stats(name, images or [], autoencoder):
                    local[name].merge(batch_stats)
                    counts[name] += n_images
        except BaseException as error:
            report_failure(error)  # the other ranks raise now instead of timing out
            raise
        merged = gather_stats([local[name] for name in sides])
        totals = sum_counts([counts[name] for name in sides])
        for name, stats, total in zip(sides, merged, totals, strict=True):
            if sides[name] is not None and total == 0:
                raise ValueError(f"{name} is empty on every rank: expected at least one image")
            getattr(self, f"{name}_stats_").to(device).merge(stats)
            setattr(self, f"n_images_{name}_", getattr(self, f"n_images_{name}_") + total)

    def _batch_stats(
        self, name: str, images, autoencoder: Autoencoder
    ) -> Iterator[tuple[GaussianStats, int]]:
        """Statistics of the patches of each batch of ``images``, with the batch's size."""
        return latent_patch_stats(
            images,
            autoencoder,
            self.patch_size_,
            batch_size=self.batch_size,
            device=resolve_device(self.device),
            generator=self._latent_generator(autoencoder),
            name=name,
            verbose=self.verbose,
            desc=f"encoding {name}",
        )

    def _fit_transport(self) -> None:
        target = self._natural_target()
        if self.restored_stats_.count < 2 or target.count < 2:
            self.__dict__.pop("gaussian_ot_", None)
            return
        self.gaussian_ot_ = self._unfitted_map().fit_stats(self.restored_stats_, target)
        self.w2_ = self.gaussian_ot_.w2_

    def _warn_if_few_vectors(self) -> None:
        """Warn where a side's covariance rests on fewer than ``MIN_VECTORS_PER_DIMENSION``
        patch vectors per dimension: its smallest eigenvalues, which the map divides by, are
        then mostly sampling noise."""
        sides = {"restored": self.restored_stats_}
        if self.n_images_natural_ > 0:  # a prior's statistics are not this fit's concern
            sides["natural"] = self.natural_stats_
        needed = MIN_VECTORS_PER_DIMENSION * self.patch_dim_
        for name, stats in sides.items():
            if stats.count < needed:
                warnings.warn(
                    f"{name}: {stats.count} patch vectors for statistics of dimension "
                    f"{self.patch_dim_}; a covariance needs several times more (at least "
                    f"{needed}, {MIN_VECTORS_PER_DIMENSION} per dimension): fit on more or "
                    "larger images, or with a smaller patch_size",
                    FitWarning,
                    stacklevel=3,
                )

    def _warn_if_far_from_the_fit(self, height: int, width: int) -> None:
        """Warn about images whose size is far from that of the restored images of the fit:
        latent patch statistics change with scale (the same scene is smoother when larger).
        The message names the size, not the image, so that Python shows it once per size."""
        fitted = restored_image_side(
            self.restored_stats_.count, self.n_images_restored_, self.patch_size_, self.factor_
        )
        if fitted / SIZE_RATIO <= math.sqrt(height * width) <= fitted * SIZE_RATIO:
            return
        warnings.warn(
            f"images of {width} x {height} px are far from the size of the restored images "
            f"of the fit (about {fitted:.0f} px; more than a factor {SIZE_RATIO:g}): latent "
            "statistics change with scale, and the transport may crush blacks or blow "
            "highlights; resize them, or fit on images of this size",
            FitWarning,
            stacklevel=5,
        )

    def _unfitted_map(self) -> GaussianOTTransformer:
        """``transport`` (or the recipe's map for the fitted patch size), cloned, with this
        operator's ``random_state``; its ``alpha`` is left at 0: ``alpha`` acts on images."""
        if self.transport is None:
            template = GaussianOTTransformer(**auto_map(self.patch_size_))
        else:
            template = clone(self.transport)
        return template.set_params(alpha=0.0, random_state=self.random_state)

    def _natural_target(self) -> GaussianStats:
        """The natural images' statistics, or without any, the prior's nearest in scale.

        Streaming restored images alone with an autoencoder that has no built-in prior leaves
        the operator unfitted until natural images come.
        """
        self.prior_scale_ = None
        no_prior = self.prior == "builtin" and not has_builtin_prior(self._autoencoder().name)
        if self.n_images_natural_ > 0 or self.restored_stats_.count == 0 or no_prior:
            return self.natural_stats_
        side = restored_image_side(
            self.restored_stats_.count, self.n_images_restored_, self.patch_size_, self.factor_
        )
        prior = self._natural_prior(self._autoencoder())
        stats, self.prior_scale_ = prior.select(self.patch_size_, side)
        return stats.to(self.restored_stats_.device)

    def _natural_prior(self, autoencoder: Autoencoder) -> NaturalPrior:
        """The ``prior`` parameter, loaded once and checked against the autoencoder."""
        key = (self.prior if isinstance(self.prior, str | os.PathLike) else id(self.prior),)
        key += (autoencoder.name,)
        cached = self.__dict__.get("_prior_cache")
        if cached is None or cached[0] != key:
            prior = load_prior(self.prior, autoencoder.name)
            prior.check_autoencoder(autoencoder)
            # a patch size the prior lacks fails here, before any encoding
            prior.select(self._resolved_patch_size(autoencoder.latent_channels), 1.0)
            self._prior_cache = (key, prior)
        return self._prior_cache[1]

    def _autoencoder(self) -> Autoencoder:
        """The loaded autoencoder, (re)loaded when ``vae`` or ``device`` changed.

        A name or path is loaded with :func:`~latent_ot.autoencoders.load_autoencoder`'s
        defaults (compute dtype ``"auto"``); an instance keeps its own dtype and settings.
        """
        device = resolve_device(self.device)
        reference = self.vae if isinstance(self.vae, str | os.PathLike) else id(self.vae)
        key = (reference, str(device))
        cached = self.__dict__.get("_autoencoder_cache")
        if cached is None or cached[0] != key:
            dtype = self.vae.dtype if isinstance(self.vae, Autoencoder) else "auto"
            self._autoencoder_cache = (key, load_autoencoder(self.vae, device=device, dtype=dtype))
        return self._autoencoder_cache[1]

    def _latent_generator(self, autoencoder: Autoencoder) -> torch.Generator | None:
        if not autoencoder.sample_latent:
            return None
        # A stream apart from the transport noise, so that one does not shift the other.
        seed = self.random_state
        if isinstance(seed, Integral) and not isinstance(seed, bool):
            seed = (int(seed) + 1) % 2**32
        return torch_generator(seed, autoencoder.device)

    # -- the pieces of transform -----------------------------------------------------------------

    def _transport_all(
        self,
        source: ImageSource,
        alphas: list[float],
        outputs: list[dict[int, Any]],
        on_encoded: Callable | None = None,
    ) -> None:
        """Fill ``outputs[i][index]`` with the output of image ``index`` at ``alphas[i]``
        (``on_encoded``: see :meth:`sweep`)."""
        autoencoder = self._autoencoder()
        self._check_compatible(autoencoder)
        generator = torch_generator(self.random_state, autoencoder.device)

        def patch_map(vectors: torch.Tensor) -> torch.Tensor:
            return self.gaussian_ot_.transport_tensor(vectors, generator)

        options = {
            "patch_size": self.patch_size_,
            "interpolation": self.interpolation,
            "low_frequency_sigma": self.low_frequency_sigma,
            "shifts": grid_shifts(self.shifts, autoencoder.factor),
            "generator": self._latent_generator(autoencoder),
        }
        batches = image_batches(source, self.batch_size, verbose=self.verbose, desc="transporting")
        with memory.reusing_freed_memory(autoencoder):
            for group in batches:
                originals = stack_pixels(group, autoencoder.device)
                self._warn_if_far_from_the_fit(*originals.shape[-2:])
                images = sweep_images(
                    originals,
                    autoencoder,
                    patch_map,
                    alphas,
                    name=name_of(group),
                    on_encoded=_per_image(on_encoded, [index for index, _ in group]),
                    **options,
                )
                for per_alpha, batch in zip(outputs, images, strict=True):
                    for k, (index, item) in enumerate(group):
                        # alpha = 1 gives the inputs themselves, bit for bit
                        per_alpha[index] = (
                            item.original() if batch is None else item.to_output(batch[k])
                        )

    def _check_compatible(self, autoencoder: Autoencoder) -> None:
        """Raise unless ``autoencoder`` gives latents like those of the fit."""
        fitted = (self.latent_channels_, self.factor_)
        if (autoencoder.latent_channels, autoencoder.factor) != fitted:
            raise IncompatibleAutoencoderError(
                f"vae: this operator was fitted on latents with {fitted[0]} channels and factor "
                f"{fitted[1]}, but {autoencoder.name} gives {autoencoder.latent_channels} "
                f"channels and factor {autoencoder.factor}; use the autoencoder of the fit, "
                "or refit"
            )
        check_same_autoencoder(
            self.autoencoder_provenance_,
            autoencoder,
            what="vae: this operator",
            override="check_autoencoder=False to LatentOTTransformer.load",
        )
        size = self._resolved_patch_size(self.latent_channels_)
        if size != self.patch_size_:
            raise IncompatibleAutoencoderError(
                f"patch_size: this operator was fitted with patches of side {self.patch_size_}"
                f" (patch vectors of length {self.patch_dim_}), patch_size="
                f"{self.patch_size!r} gives {size}; refit"
            )

    def _fit_signature(self) -> tuple:
        """What two operators must share to merge: the autoencoder (its name or path, or the
        fingerprint of an instance's weights, equal for copies) and the patches."""
        vae = self.vae
        if isinstance(vae, str | os.PathLike):
            described = os.fspath(vae)
        else:
            described = f"{type(vae).__name__} with weights {self._autoencoder().fingerprint()}"
        return (described, self.patch_size_, self.latent_channels_, self.factor_)


MIN_VECTORS_PER_DIMENSION = 10
"""Patch vectors per dimension under which ``fit`` warns that a covariance is unreliable."""

SIZE_RATIO = 2.0
"""How far (as a factor of the side) images may be from those of the fit before a warning."""


def _fitted_state(operator: LatentOTTransformer) -> list[str]:
    """The names of what ``fit`` sets: scikit-learn's public trailing-underscore attributes."""
    return [name for name in vars(operator) if name.endswith("_") and not name.startswith("_")]


def _per_image(
    on_encoded: Callable | None, indices: list[int]
) -> Callable[[torch.Tensor], None] | None:
    """A batch's latents handed to ``on_encoded(index, latents)`` image by image."""
    if on_encoded is None:
        return None

    def each(latents: torch.Tensor) -> None:
        for k, index in enumerate(indices):
            on_encoded(index, latents[k : k + 1])

    return each


def _check_alpha(alpha: Any) -> float:
    return float(check_constraints(alpha, "alpha", ALPHA))


def _vae_reference(vae: Any) -> str:
    """What a file stores of ``vae``: its name or path, or where an instance was loaded from."""
    if isinstance(vae, str | os.PathLike):
        return os.fspath(vae)
    source = getattr(vae, "source", None)
    if source is None:
        raise TypeError(
            f"vae: a {type(vae).__name__} built in code cannot be written to an operator file, "
            "which stores how to load an autoencoder (a preset name, hub id or directory), "
            "not its weights; pass one of those, or pickle the operator with joblib"
        )
    return source
