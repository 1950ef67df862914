"""Optimal transport between Gaussian distributions, in closed form.

Pure functions on torch tensors. Every computation runs in float64 on the device the inputs
live on; matrices are symmetric positive semi-definite (PSD) covariances.

Notation follows the Method page of the documentation (:ref:`method-map`, where the
equations are): ``mu_s, Sigma_s`` the source (restored)
distribution, ``mu_t, Sigma_t`` the target (natural) one, ``d`` the dimension.

Singularity is decided by a relative tolerance, never an absolute epsilon: an eigenvalue
``lam`` of a covariance counts as zero when ``lam <= rtol * lam_max``. The default
``rtol = d * eps(float64)`` is the one ``numpy.linalg.matrix_rank`` uses, so a covariance is
"singular" here exactly when numpy would call it rank-deficient.

References
----------
.. [1] Adrai, Ohayon, Elad, Michaeli. "Deep Optimal Transport: A Practical Algorithm for
   Photo-realistic Image Restoration", NeurIPS 2023.
.. [2] Knott, Smith. "On the optimal mapping of distributions", Journal of Optimization
   Theory and Applications, 1984.
.. [3] Freirich, Michaeli, Meir. "A theory of the distortion-perception tradeoff in
   Wasserstein space", NeurIPS 2021.
.. [4] Gelbrich. "On a formula for the L2 Wasserstein metric between measures on Euclidean
   and Hilbert spaces", Mathematische Nachrichten, 1990.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor

from .validation import check_choice

__all__ = [
    "STOCHASTIC_MODES",
    "GaussianMap",
    "default_rtol",
    "fit_gaussian_map",
    "is_singular",
    "psd_inv_sqrt",
    "psd_pinv",
    "psd_sqrt",
    "scale_noise",
    "stochastic_transport",
    "transport_matrix",
    "w2_distance",
]

StochasticMode = Literal["auto", "never", "always"]
STOCHASTIC_MODES: tuple[str, ...] = get_args(StochasticMode)
"""When the stochastic map is used: the values of ``stochastic`` everywhere."""


def default_rtol(dim: int) -> float:
    """Relative eigenvalue tolerance below which a covariance counts as singular.

    ``dim * eps(float64)``, as in ``numpy.linalg.matrix_rank``.

    Examples
    --------
    >>> default_rtol(10)
    2.220446049250313e-15
    """
    return dim * torch.finfo(torch.float64).eps


def _symmetrize(matrix: Tensor) -> Tensor:
    return (matrix + matrix.mT) / 2


def _psd_eigh(cov: Tensor) -> tuple[Tensor, Tensor]:
    """Eigen-decomposition of a PSD matrix, negative round-off eigenvalues clamped to 0."""
    eigvals, eigvecs = torch.linalg.eigh(_symmetrize(cov.to(torch.float64)))
    return eigvals.clamp_min(0.0), eigvecs


def _from_eigh(eigvals: Tensor, eigvecs: Tensor) -> Tensor:
    return _symmetrize((eigvecs * eigvals) @ eigvecs.mT)


def _nonzero_mask(eigvals: Tensor, rtol: float | None) -> Tensor:
    rtol = default_rtol(eigvals.shape[-1]) if rtol is None else rtol
    return eigvals > rtol * eigvals.max()


def psd_sqrt(cov: Tensor) -> Tensor:
    """Square root of a symmetric PSD matrix.

    Parameters
    ----------
    cov : Tensor of shape (d, d)
        Symmetric positive semi-definite matrix; tiny negative eigenvalues from round-off are
        clamped to zero.

    Returns
    -------
    Tensor of shape (d, d), float64
        The symmetric PSD matrix ``S`` with ``S @ S = cov``.

    Examples
    --------
    >>> psd_sqrt(torch.diag(torch.tensor([4.0, 9.0])))
    tensor([[2., 0.],
            [0., 3.]], dtype=torch.float64)
    """
    eigvals, eigvecs = _psd_eigh(cov)
    return _from_eigh(eigvals.sqrt(), eigvecs)


def psd_inv_sqrt(cov: Tensor, rtol: float | None = None) -> Tensor:
    """Pseudo-inverse square root of a symmetric PSD matrix.

    Eigenvalues at or below ``rtol * lam_max`` are treated as zero (their inverse is zero),
    so the result is the inverse square root for a non-singular matrix and the
    Moore-Penrose pseudo-inverse of ``psd_sqrt(cov)`` otherwise.

    Examples
    --------
    >>> psd_inv_sqrt(torch.diag(torch.tensor([4.0, 0.0])))
    tensor([[0.5000, 0.0000],
            [0.0000, 0.0000]], dtype=torch.float64)
    """
    eigvals, eigvecs = _psd_eigh(cov)
    keep = _nonzero_mask(eigvals, rtol)
    inv_sqrt = torch.where(keep, eigvals.clamp_min(torch.finfo(torch.float64).tiny).rsqrt(), 0.0)
    return _from_eigh(inv_sqrt, eigvecs)


def psd_pinv(cov: Tensor, rtol: float | None = None) -> Tensor:
    """Moore-Penrose pseudo-inverse of a symmetric PSD matrix (eigenvalue cut at ``rtol``).

    Examples
    --------
    >>> psd_pinv(torch.diag(torch.tensor([4.0, 0.0])))
    tensor([[0.2500, 0.0000],
            [0.0000, 0.0000]], dtype=torch.float64)
    """
    eigvals, eigvecs = _psd_eigh(cov)
    keep = _nonzero_mask(eigvals, rtol)
    inverse = torch.where(keep, 1.0 / eigvals.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
    return _from_eigh(inverse, eigvecs)


def is_singular(cov: Tensor, rtol: float | None = None) -> bool:
    """Whether a PSD matrix is singular: its smallest eigenvalue is ``<= rtol * lam_max``.

    The zero matrix is singular.

    Examples
    --------
    >>> is_singular(torch.eye(3)), is_singular(torch.diag(torch.tensor([1.0, 1e-20])))
    (False, True)
    """
    eigvals = torch.linalg.eigvalsh(_symmetrize(cov.to(torch.float64)))
    return not bool(_nonzero_mask(eigvals, rtol).all())


def transport_matrix(cov_source: Tensor, cov_target: Tensor) -> Tensor:
    """Matrix of the optimal transport map between Gaussians with a non-singular source.

    ``T = S^{-1/2} (S^{1/2} Sigma_t S^{1/2})^{1/2} S^{-1/2}`` with ``S = Sigma_s`` [2]_,
    symmetric PSD, so that ``T Sigma_s T = Sigma_t``. The target may be singular.

    Parameters
    ----------
    cov_source, cov_target : Tensor of shape (d, d)
        Source (positive definite) and target (PSD) covariances.

    Returns
    -------
    Tensor of shape (d, d), float64

    References
    ----------
    .. [2] Knott, Smith. "On the optimal mapping of distributions", 1984.

    Examples
    --------
    >>> transport_matrix(torch.eye(2), torch.diag(torch.tensor([4.0, 9.0])))
    tensor([[2., 0.],
            [0., 3.]], dtype=torch.float64)
    """
    eigvals, eigvecs = _psd_eigh(cov_source)
    sqrt_s = _from_eigh(eigvals.sqrt(), eigvecs)
    inv_sqrt_s = _from_eigh(eigvals.rsqrt(), eigvecs)
    middle = psd_sqrt(sqrt_s @ cov_target.to(torch.float64) @ sqrt_s)
    return _symmetrize(inv_sqrt_s @ middle @ inv_sqrt_s)


def stochastic_transport(
    cov_source: Tensor, cov_target: Tensor, rtol: float | None = None
) -> tuple[Tensor, Tensor]:
    """Matrix and noise covariance of the stochastic Gaussian transport (singular source).

    With ``A = Sigma_t^{1/2}`` and ``M = (A Sigma_s A)^{1/2}`` [3]_ (paper eq. 5)::

        T       = A M A^+ Sigma_s^+
        Sigma_w = Sigma_t - T Sigma_s T^T

    and the map ``v -> mu_t + T (v - mu_s) + w`` with ``w ~ N(0, Sigma_w)`` drawn
    independently for every sample has output covariance ``Sigma_t``. Pseudo-inverses cut
    eigenvalues at ``rtol`` (see the module docstring). ``Sigma_w`` is symmetrised and its
    round-off negative eigenvalues clamped to zero.

    Parameters
    ----------
    cov_source, cov_target : Tensor of shape (d, d)
        PSD covariances; either may be singular (a zero covariance gives ``T = 0``).
    rtol : float, optional
        Relative eigenvalue tolerance of the pseudo-inverses; ``d * eps`` by default.

    Returns
    -------
    matrix : Tensor of shape (d, d), float64
    noise_cov : Tensor of shape (d, d), float64, PSD

    References
    ----------
    .. [3] Freirich, Michaeli, Meir. "A theory of the distortion-perception tradeoff in
       Wasserstein space", NeurIPS 2021.

    Examples
    --------
    >>> cov_s = torch.diag(torch.tensor([1.0, 0.0]))
    >>> matrix, noise_cov = stochastic_transport(cov_s, torch.eye(2))
    >>> matrix
    tensor([[1., 0.],
            [0., 0.]], dtype=torch.float64)
    >>> noise_cov
    tensor([[0., 0.],
            [0., 1.]], dtype=torch.float64)
    """
    cov_source = _symmetrize(cov_source.to(torch.float64))
    cov_target = _symmetrize(cov_target.to(torch.float64))
    eigvals_t, eigvecs_t = _psd_eigh(cov_target)
    sqrt_t = _from_eigh(eigvals_t.sqrt(), eigvecs_t)
    keep_t = _nonzero_mask(eigvals_t, rtol)
    inv_sqrt_t = _from_eigh(
        torch.where(keep_t, eigvals_t.clamp_min(torch.finfo(torch.float64).tiny).rsqrt(), 0.0),
        eigvecs_t,
    )
    middle = psd_sqrt(sqrt_t @ cov_source @ sqrt_t)
    matrix = sqrt_t @ middle @ inv_sqrt_t @ psd_pinv(cov_source, rtol)
    noise_cov = _symmetrize(cov_target - matrix @ cov_source @ matrix.mT)
    eigvals_w, eigvecs_w = _psd_eigh(noise_cov)
    return matrix, _from_eigh(eigvals_w, eigvecs_w)


def w2_distance(
    mean_source: Tensor, cov_source: Tensor, mean_target: Tensor, cov_target: Tensor
) -> Tensor:
    """2-Wasserstein (Frechet / Gelbrich) distance between two Gaussians, not squared.

    [4]_, clamped at zero against round-off::

        W2^2 = |mu_s - mu_t|^2
               + tr(Sigma_s + Sigma_t - 2 (Sigma_t^{1/2} Sigma_s Sigma_t^{1/2})^{1/2})

    References
    ----------
    .. [4] Gelbrich. "On a formula for the L2 Wasserstein metric between measures on
       Euclidean and Hilbert spaces", 1990.

    Examples
    --------
    >>> w2_distance(torch.zeros(2), torch.eye(2), torch.tensor([3.0, 4.0]), torch.eye(2))
    tensor(5., dtype=torch.float64)
    """
    mean_source, mean_target = mean_source.to(torch.float64), mean_target.to(torch.float64)
    cov_source, cov_target = cov_source.to(torch.float64), cov_target.to(torch.float64)
    if torch.equal(mean_source, mean_target) and torch.equal(cov_source, cov_target):
        return mean_source.new_zeros(())  # exactly, not up to the round-off of the square roots
    sqrt_t = psd_sqrt(cov_target)
    cross_eigvals = torch.linalg.eigvalsh(_symmetrize(sqrt_t @ cov_source @ sqrt_t))
    trace_term = (
        cov_source.trace() + cov_target.trace() - 2 * cross_eigvals.clamp_min(0).sqrt().sum()
    )
    squared = (mean_source - mean_target).square().sum() + trace_term
    return squared.clamp_min(0).sqrt()


@dataclass(frozen=True)
class GaussianMap:
    """An affine, optionally noisy, map ``v -> mu_t + T (v - mu_s) + L z``.

    Attributes
    ----------
    mean_source, mean_target : Tensor of shape (d,)
    matrix : Tensor of shape (d, d)
        The transport matrix ``T``.
    noise_factor : Tensor of shape (d, d) or None
        ``L`` with ``L L^T = Sigma_w``, the noise covariance of the stochastic map; None for
        a deterministic map.

    Examples
    --------
    >>> identity = GaussianMap(torch.zeros(2), torch.ones(2), torch.eye(2), None)
    >>> identity(torch.zeros(1, 2))
    tensor([[1., 1.]], dtype=torch.float64)
    """

    mean_source: Tensor
    mean_target: Tensor
    matrix: Tensor
    noise_factor: Tensor | None

    def __post_init__(self) -> None:
        for name in ("mean_source", "mean_target", "matrix", "noise_factor"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, value.to(torch.float64))

    @property
    def stochastic(self) -> bool:
        """Whether the map adds noise."""
        return self.noise_factor is not None

    def to(self, device: torch.device | str) -> GaussianMap:
        """The same map with its tensors on ``device``."""
        factor = None if self.noise_factor is None else self.noise_factor.to(device)
        return GaussianMap(
            self.mean_source.to(device), self.mean_target.to(device), self.matrix.to(device), factor
        )

    def __call__(self, samples: Tensor, noise: Tensor | None = None) -> Tensor:
        """Map the rows of ``samples`` (n, d), in float64 on their device.

        ``noise`` (n, d) is standard normal noise, required by a stochastic map.
        """
        if self.stochastic and noise is None:
            raise ValueError(
                "noise: this map is stochastic; pass standard normal noise of shape (n, d)"
            )
        # As v T^T + (mu_t - T mu_s): one product and no centred copy of the samples.
        offset = self.mean_target - self.matrix @ self.mean_source
        mapped = torch.addmm(offset, samples.to(torch.float64), self.matrix.mT)
        if self.noise_factor is not None:
            mapped.addmm_(noise.to(torch.float64), self.noise_factor.mT)
        return mapped


def fit_gaussian_map(
    mean_source: Tensor,
    cov_source: Tensor,
    mean_target: Tensor,
    cov_target: Tensor,
    *,
    stochastic: StochasticMode = "auto",
    rtol: float | None = None,
) -> GaussianMap:
    """The optimal transport map from ``N(mu_s, Sigma_s)`` to ``N(mu_t, Sigma_t)``.

    Deterministic (:func:`transport_matrix`) when the source covariance is non-singular,
    stochastic (:func:`stochastic_transport`) when it is singular in the sense of
    :func:`is_singular`; ``stochastic="never"`` or ``"always"`` force one of the two. Forcing
    the deterministic map on a singular source raises ``ValueError``.

    Equal source and target (bit for bit) give exactly the identity, deterministic whatever
    ``stochastic`` says: the closed forms would return it only up to round-off, which grows
    with the condition number of the covariance.

    Examples
    --------
    >>> ot_map = fit_gaussian_map(torch.zeros(2), torch.eye(2), torch.ones(2), 4 * torch.eye(2))
    >>> ot_map(torch.ones(1, 2))
    tensor([[3., 3.]], dtype=torch.float64)
    """
    check_choice(stochastic, "stochastic", STOCHASTIC_MODES)
    if torch.equal(mean_source, mean_target) and torch.equal(cov_source, cov_target):
        identity = torch.eye(cov_source.shape[-1], dtype=torch.float64, device=cov_source.device)
        return GaussianMap(mean_source, mean_target, identity, None)
    singular = is_singular(cov_source, rtol)
    if stochastic == "never" and singular:
        raise ValueError(
            "stochastic='never' but the source covariance is singular (smallest eigenvalue "
            "below rtol * largest), so no deterministic transport map exists; use "
            "stochastic='auto', a smaller rtol, or more samples"
        )
    if stochastic == "always" or (stochastic == "auto" and singular):
        matrix, noise_cov = stochastic_transport(cov_source, cov_target, rtol)
        noise_factor = psd_sqrt(noise_cov)
    else:
        matrix, noise_factor = transport_matrix(cov_source, cov_target), None
    return GaussianMap(
        mean_source.to(torch.float64), mean_target.to(torch.float64), matrix, noise_factor
    )


def scale_noise(ot_map: GaussianMap, scale: float) -> GaussianMap:
    r"""The map with the standard deviation of its noise multiplied by ``scale``.

    .. math::

        v \mapsto \mu_t + T (v - \mu_s) + s\,L z, \qquad
        \operatorname{Cov} = T \Sigma_s T^\top + s^2 \Sigma_w

    ``s = 1`` keeps the stochastic map, whose output covariance is the target's; ``s = 0``
    gives its mean, a deterministic map that leaves the directions cut from the source at
    the target's mean, short of their target variance. A deterministic map is returned as
    it is.

    Examples
    --------
    >>> noisy = fit_gaussian_map(torch.zeros(2), torch.diag(torch.tensor([1.0, 0.0])),
    ...                          torch.zeros(2), torch.eye(2))
    >>> scale_noise(noisy, 0.0)(torch.ones(1, 2))
    tensor([[1., 0.]], dtype=torch.float64)
    """
    if ot_map.noise_factor is None or scale == 1.0:
        return ot_map
    factor = None if scale == 0.0 else ot_map.noise_factor * scale
    return GaussianMap(ot_map.mean_source, ot_map.mean_target, ot_map.matrix, factor)
