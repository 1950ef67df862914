"""Resolving what ``vae`` names (instance, ``"pixel"``, preset, directory, hub id) to an
:class:`~latent_ot.autoencoders.Autoencoder`.

A preset or hub id is looked for, in order, in the models directory (``models_dir=`` or
:data:`~latent_ot.autoencoders.MODELS_DIR_ENV`), in the package itself for the bundled presets
(:data:`~latent_ot.autoencoders.BUNDLED_WEIGHTS`), then on the Hugging Face hub for those that
have a hub id. The first place that has the model is used; nothing falls back from one
autoencoder to another, and a model found nowhere raises an error naming every place tried.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..devices import resolve_dtype
from ..exceptions import AutoencoderNotFoundError, first_line
from ._base import Autoencoder
from .diffusers import _diffusers_class, _wrap_diffusers
from .pixel import PixelAutoencoder
from .presets import BUNDLED_WEIGHTS, MODELS_DIR_ENV, PRESETS
from .taesd import _TAESD_HOME, TAESDAutoencoder, _taesd_prefixes


def _load_directory(path: Path, dtype: torch.dtype, sample_latent: bool) -> Autoencoder:
    """A diffusers model directory (or pipeline with a ``vae/``) or a TAESD ``.pth`` pair."""
    if not (path / "config.json").is_file() and (path / "vae" / "config.json").is_file():
        path = path / "vae"
    config_file = path / "config.json"
    if config_file.is_file():
        try:
            class_name = json.loads(config_file.read_text(encoding="utf-8")).get("_class_name")
        except (ValueError, AttributeError) as err:
            raise ValueError(f"{config_file} is not a diffusers config (JSON object)") from err
        cls = _diffusers_class(class_name, str(config_file))
        model = cls.from_pretrained(path, torch_dtype=dtype)
        return _wrap_diffusers(model, sample_latent)
    if _taesd_prefixes(path):
        return TAESDAutoencoder.from_directory(path)
    raise AutoencoderNotFoundError(
        f"{path} holds neither a diffusers autoencoder (config.json and weights) nor a TAESD "
        f"pair <name>_encoder.pth + <name>_decoder.pth"
    )


def _first_line(err: BaseException, limit: int = 300) -> str:
    return f"{type(err).__name__}: {first_line(err)[:limit]}"


def _sources(spec: str) -> tuple[str | None, str, bool]:
    """(hub id or None, folder name in a models directory, whether bundled) of a name."""
    if spec in PRESETS:
        return PRESETS[spec].hub_id, spec, PRESETS[spec].bundled
    if spec.count("/") == 1 and all(spec.split("/")) and not spec.startswith((".", "~")):
        return spec, spec.split("/")[1], False
    raise AutoencoderNotFoundError(
        f"unknown autoencoder {spec!r}: not an existing directory, not a preset "
        f"({', '.join(PRESETS)}), not a Hugging Face hub id 'owner/name'"
    )


def _local_copy(
    local_name: str, bundled: bool, models_dir: str | os.PathLike | None, looked: list[str]
) -> Path | None:
    """The models directory's ``local_name/``, else the bundled one; None if neither exists.

    Every place tried without success is added to ``looked``.
    """
    root = models_dir if models_dir is not None else os.environ.get(MODELS_DIR_ENV)
    if root:
        candidate = Path(root).expanduser() / local_name
        if candidate.is_dir():
            return candidate
        origin = "models_dir" if models_dir is not None else f"${MODELS_DIR_ENV}"
        looked.append(f"{candidate} ({origin}; not found)")
    else:
        looked.append(f"no local models directory (models_dir not given, ${MODELS_DIR_ENV} unset)")
    if bundled:
        candidate = BUNDLED_WEIGHTS / local_name
        if candidate.is_dir():
            return candidate
        looked.append(f"{candidate} (bundled with latent-ot; missing: reinstall the package)")
    return None


def _load_from_hub(
    spec: str,
    hub_id: str,
    dtype: torch.dtype,
    sample_latent: bool,
    looked: list[str],
    how: str,
) -> Autoencoder:
    """``hub_id`` loaded with diffusers; if that fails, an error listing ``looked`` and the hub."""

    def not_found(err: BaseException) -> AutoencoderNotFoundError:
        offline = _offline_reason(err)
        if offline is not None:
            named = repr(spec) if spec == hub_id else f"{spec!r} (Hugging Face hub id {hub_id!r})"
            return AutoencoderNotFoundError(
                f"autoencoder {named} is not available offline: {offline}, and no local copy "
                f"exists (looked in: {'; '.join(looked)}). Load it once while online (it is "
                f"then cached). {how}"
            )
        looked.append(f"Hugging Face hub id {hub_id!r} ({_first_line(err)})")
        message = f"autoencoder {spec!r} not found. Looked in: " + "; ".join(looked) + ". "
        return AutoencoderNotFoundError(message + how)

    # diffusers goes through huggingface_hub: HF_HUB_OFFLINE, HF_HOME and its cache apply.
    import diffusers

    try:
        config = diffusers.AutoencoderKL.load_config(hub_id)
    except (OSError, ValueError) as err:  # ValueError: a malformed hub id
        raise not_found(err) from err
    cls = _diffusers_class(config.get("_class_name"), hub_id)
    try:
        model = cls.from_pretrained(hub_id, torch_dtype=dtype)
    except OSError as err:  # e.g. offline with the config cached but not the weights
        raise not_found(err) from err
    return _wrap_diffusers(model, sample_latent)


# huggingface_hub's errors, by name (their modules moved between versions): no file in the
# cache and the hub unreachable; the hub not even tried, because HF_HUB_OFFLINE is set.
_NOT_CACHED = "LocalEntryNotFoundError"
_OFFLINE_MODE = "OfflineModeIsEnabled"


def _offline_reason(err: BaseException) -> str | None:
    """Why the hub could not be reached, if that is what ``err`` (or its causes) says."""
    names: set[str] = set()
    seen: BaseException | None = err
    for _ in range(16):  # a chain of causes, bounded in case it loops
        if seen is None:
            break
        names.update(kind.__name__ for kind in type(seen).__mro__)
        seen = seen.__cause__ or seen.__context__
    if _OFFLINE_MODE in names:
        return "HF_HUB_OFFLINE is set"
    if _NOT_CACHED in names:
        return "the Hugging Face hub cannot be reached from this machine"
    return None


def _load_by_name(
    spec: str, dtype: torch.dtype, sample_latent: bool, models_dir: str | os.PathLike | None
) -> Autoencoder:
    path = Path(spec).expanduser()
    if path.is_dir():
        return _load_directory(path, dtype, sample_latent)
    if path.is_file():
        raise ValueError(
            f"vae={spec!r} is a file; pass the directory holding the autoencoder "
            f"(a diffusers config.json and weights, or a <name>_encoder.pth/_decoder.pth pair)"
        )
    hub_id, local_name, bundled = _sources(spec)
    looked = [f"{path.resolve()} (as a path; no such directory)"]
    local = _local_copy(local_name, bundled, models_dir, looked)
    if local is not None:
        return _load_directory(local, dtype, sample_latent)
    how = (
        f"To use a local copy, put it in <models dir>/{local_name}/ and set {MODELS_DIR_ENV} "
        f"(or pass models_dir=), or pass the directory itself as vae."
    )
    if hub_id is None:
        raise AutoencoderNotFoundError(
            f"autoencoder {spec!r} not found; it cannot be loaded from the Hugging Face hub: "
            f"download {local_name}_encoder.pth and {local_name}_decoder.pth from {_TAESD_HOME}. "
            f"Looked in: " + "; ".join(looked) + ". " + how
        )
    return _load_from_hub(spec, hub_id, dtype, sample_latent, looked, how)


def _resolve(
    vae: Any, dtype: torch.dtype, sample_latent: bool, models_dir: str | os.PathLike | None
) -> Autoencoder:
    """The :class:`Autoencoder` that ``vae`` is, wraps or names (see :func:`load_autoencoder`)."""
    if isinstance(vae, Autoencoder):
        if sample_latent and not vae.sample_latent:
            raise ValueError(
                f"sample_latent=True but {vae.name} was built without latent sampling; "
                f"build the adapter with sample_latent=True instead"
            )
        return vae
    if isinstance(vae, (str, os.PathLike)):
        if os.fspath(vae) == "pixel":
            return PixelAutoencoder()
        return _load_by_name(os.fspath(vae), dtype, sample_latent, models_dir)
    autoencoder = _wrap_diffusers(vae, sample_latent)
    if autoencoder is None:
        raise TypeError(
            "vae must be an Autoencoder, a diffusers AutoencoderKL or AutoencoderTiny, "
            f"a preset name, a hub id or a directory; got {type(vae).__name__}"
        )
    return autoencoder


def load_autoencoder(
    vae: Any,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | str | None = None,
    sample_latent: bool = False,
    models_dir: str | os.PathLike | None = None,
    tile_size: int | str | None = "auto",
    tile_overlap: int | None = None,
    memory_budget: int | str = "auto",
    memory_format: str = "auto",
) -> Autoencoder:
    """Resolve ``vae`` to an :class:`Autoencoder` on ``device`` with compute dtype ``dtype``.

    Parameters
    ----------
    vae : Autoencoder, diffusers model, str or os.PathLike
        One of

        - an :class:`Autoencoder`: returned itself, moved to ``device`` / ``dtype``;
        - a ``diffusers.AutoencoderKL`` or ``diffusers.AutoencoderTiny``: wrapped (and moved,
          in place);
        - ``"pixel"``: the identity (:class:`PixelAutoencoder`);
        - a preset name from :data:`PRESETS`, e.g. ``"taef2"`` (bundled with the package,
          offline) or ``"sd-vae-ft-mse"`` (the paper's, downloaded on first use);
        - a local directory: a diffusers model (``config.json`` with ``_class_name``
          ``AutoencoderKL`` or ``AutoencoderTiny``, or a pipeline with a ``vae/`` folder), or a
          TAESD-family pair ``<name>_encoder.pth`` + ``<name>_decoder.pth``;
        - a Hugging Face hub id ``"owner/name"``, loaded with diffusers ``from_pretrained``
          (``HF_HUB_OFFLINE`` and the Hugging Face cache apply).

        For a preset or hub id, ``<models_dir>/<preset or name>/`` is tried first, then the
        copy bundled with the package (:data:`BUNDLED_WEIGHTS`, ``"taef2"``), then the hub.
    device : str or torch.device, default "cpu"
        Where the model runs.
    dtype : torch.dtype, str or None, default None
        Compute dtype; None means float32, ``"auto"`` float16 on CUDA and float32 elsewhere
        (:data:`~latent_ot.devices.AUTO_DTYPES`). float16 / bfloat16 work where the model and
        device support them. Outputs are float32 whatever the compute dtype.
    sample_latent : bool, default False
        Sample the latent distribution instead of taking its mean (``AutoencoderKL`` only;
        deterministic autoencoders raise ``ValueError``). An :class:`Autoencoder` instance
        keeps its own setting.
    models_dir : str or os.PathLike, optional
        Directory of local model copies, tried before the bundled weights and the hub; defaults
        to the environment variable :data:`MODELS_DIR_ENV` (``LATENT_OT_MODELS_DIR``).
    tile_size : int, "auto" or None, default "auto"
        Images larger than this many pixels (height or width) are encoded and decoded tile by
        tile, bounding the memory; ``"auto"``: by memory, images and batches whose pass would
        take more than ``memory_budget`` are split; None: never. See
        :meth:`Autoencoder.set_tiling`.
    tile_overlap : int, optional
        Pixels shared by neighbouring tiles; by default the adapter's choice.
    memory_budget : int or "auto", default "auto"
        Bytes one pass may take with ``tile_size="auto"``; ``"auto"``: a share of the memory
        free on the device when the pass starts (:func:`latent_ot.memory.auto_memory_budget`). An
        :class:`Autoencoder` instance keeps its own tiling unless ``tile_size`` (other than
        ``"auto"``), ``tile_overlap`` or ``memory_budget`` is given.
    memory_format : {"auto", "channels_last", "contiguous"}, default "auto"
        The layout the model computes in; ``"auto"``: channels-last on the CPU, where it is
        faster, contiguous elsewhere (:data:`AUTO_MEMORY_FORMATS`). The outputs are the same
        to float precision. An :class:`Autoencoder` instance keeps its own unless another
        value is given. See :meth:`Autoencoder.set_memory_format`.

    Returns
    -------
    Autoencoder

    Raises
    ------
    AutoencoderNotFoundError
        If the model is found neither locally (models directory, bundled weights) nor on the
        hub; the message lists every place looked in and how to supply a local copy. No other
        autoencoder is loaded in its place.
    TypeError
        If ``vae`` is of an unsupported type.
    ValueError
        If a local file is damaged or does not match the expected layout, ``sample_latent``
        is asked of a deterministic autoencoder, or the tiling is invalid.

    Examples
    --------
    >>> import torch
    >>> ae = load_autoencoder("pixel")
    >>> ae.factor, ae.latent_channels, ae.dtype
    (1, 3, torch.float32)

    The default, TAEF2, ships with the package: it loads offline, with nothing to configure.

    >>> ae = load_autoencoder("taef2")
    >>> ae.latent_channels, ae.factor
    (32, 8)
    >>> ae.decode(ae.encode(torch.rand(1, 3, 64, 64))).shape
    torch.Size([1, 3, 64, 64])
    """
    dtype = resolve_dtype(dtype, device)
    autoencoder = _resolve(vae, dtype, sample_latent, models_dir)
    if isinstance(vae, str | os.PathLike):
        autoencoder.source = os.fspath(vae)  # what an operator file stores to load it again
    if sample_latent and not autoencoder.sample_latent:
        raise ValueError(
            f"sample_latent=True, but {autoencoder.name} has a deterministic encoder "
            f"(only diffusers AutoencoderKL has a latent distribution to sample)"
        )
    changed_tiling = tile_size != "auto" or tile_overlap is not None or memory_budget != "auto"
    if autoencoder is not vae or changed_tiling:
        autoencoder.set_tiling(tile_size, tile_overlap, memory_budget=memory_budget)
    if autoencoder is not vae or memory_format != "auto":
        autoencoder.set_memory_format(memory_format)
    return autoencoder.to(device=device, dtype=dtype)
