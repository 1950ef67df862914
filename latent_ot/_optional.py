"""Optional packages: imported when a feature needs them, with an error that names the extra.

The core install (torch, diffusers, numpy, scipy, scikit-learn, pillow, joblib, safetensors,
tqdm) is enough to fit, transform, save and load. A few features need more, and each extra of
``pyproject.toml`` installs what one feature needs:

============  ==============================================  ==============================
extra         packages                                        for
============  ==============================================  ==============================
``plots``     matplotlib                                      curves and collages
``metrics``   torchmetrics, torch-fidelity, torchvision       PSNR, SSIM, FID, KID, IS, LPIPS
``demo``      matplotlib, scikit-image, torchmetrics          ``latent-ot demo``, the examples
============  ==============================================  ==============================

Every import of an optional package in latent-ot goes through `require`, so a missing one
always reads the same way: what needs it, and the one command that installs it.

Examples
--------
>>> require("math", extra="demo", purpose="the demo").sqrt(4.0)
2.0
>>> try:
...     require("not_a_package_xyz", extra="plots", purpose="plotting")
... except MissingExtraError as error:
...     print(error)
plotting needs not_a_package_xyz: pip install "latent-ot[plots]"
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXTRAS", "MissingExtraError", "install_command", "require"]

#: The extras of ``pyproject.toml`` that `require` may name.
EXTRAS = ("plots", "metrics", "demo")


class MissingExtraError(ModuleNotFoundError):
    """An optional package is missing (or broken) where a feature needs it.

    Attributes
    ----------
    package : str
        The distribution to install (``"scikit-image"``), which may differ from the module.
    extra : str
        The extra of latent-ot that installs it.
    remedy : str
        The command that installs the extra.
    """

    def __init__(self, purpose: str, package: str, module: str, extra: str) -> None:
        self.package = package
        self.extra = extra
        self.remedy = install_command(extra)
        super().__init__(f"{purpose} needs {package}: {self.remedy}", name=module)


def install_command(extra: str) -> str:
    """The pip command that installs one extra of latent-ot.

    Examples
    --------
    >>> install_command("metrics")
    'pip install "latent-ot[metrics]"'
    """
    if extra not in EXTRAS:
        raise ValueError(f"extra must be one of {', '.join(map(repr, EXTRAS))}, got {extra!r}")
    return f'pip install "latent-ot[{extra}]"'


def require(module: str, *, extra: str, purpose: str, package: str | None = None) -> ModuleType:
    """Import ``module``, or raise `MissingExtraError` naming the extra that installs it.

    Parameters
    ----------
    module : str
        The module to import, dotted (``"matplotlib.figure"``, ``"skimage.restoration"``).
    extra : str
        The extra that installs it, one of `EXTRAS`.
    purpose : str
        What needs it, the start of the message (``"the demo"``).
    package : str, optional
        The distribution's name when it differs from the module's top level
        (``"scikit-image"`` for ``skimage``).

    Returns
    -------
    module
        The imported module.

    Raises
    ------
    MissingExtraError
        When the import fails, for any reason: a broken install counts as missing.

    Examples
    --------
    >>> require("json", extra="plots", purpose="plots").dumps([1])
    '[1]'
    """
    install_command(extra)  # an unknown extra is a bug here, not a missing package
    try:
        return importlib.import_module(module)
    except ImportError as error:
        name = package or module.partition(".")[0]
        raise MissingExtraError(purpose, name, module, extra) from error
