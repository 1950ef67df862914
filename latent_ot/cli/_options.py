"""The options commands share, and the types of their values.

Each type raises ``argparse.ArgumentTypeError``, which argparse reports as a usage error
(exit status 2) after the option's name; the message reads as :mod:`latent_ot.validation`'s.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import textwrap
from collections.abc import Callable
from typing import Any

from ..metrics import METRICS
from ..provenance import check_sha256
from ..validation import check_int, check_real
from ._models import VAE_CHOICE

__all__ = [
    "DEFAULT_ALPHAS",
    "OPERATOR_SUFFIX",
    "HelpFormatter",
    "add_alphas_option",
    "add_autoencoder_options",
    "add_exif_orientation_option",
    "add_metrics_option",
    "add_output_options",
    "add_seed",
    "add_sweep_options",
    "attach_dash_values",
    "command",
    "integer",
    "integer_or_auto",
    "metric_names",
    "parse_alphas",
    "parse_shard",
    "positive_or_none",
    "real",
    "wrap",
]

OPERATOR_SUFFIX = ".safetensors"
MAX_SEED = 2**32 - 1  # numpy's seed range (RandomState), which every random_state accepts
DEFAULT_ALPHAS = "0:1:0.25"
_MAX_ALPHAS = 10_000


def wrap(text: str) -> str:
    """``text`` filled to the terminal's width, as argparse fills option help (88 at most)."""
    width = min(88, shutil.get_terminal_size().columns - 2)
    return textwrap.fill(text, width=width, break_on_hyphens=False)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help with the descriptions as written (already wrapped) and options in one column."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)

    def _split_lines(self, text: str, width: int) -> list[str]:
        # Names such as sd-vae-ft-mse and --patch-size stay whole.
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def command(commands, name: str, *, summary, description, notes="", examples=(), run):
    """A subcommand's parser: its help reads as description, options, notes, examples."""
    epilog = wrap(notes) if notes else ""
    if examples:
        epilog += "\n\nexamples:\n" + "\n".join(f"  {example}" for example in examples)
    parser = commands.add_parser(
        name,
        help=summary,
        description=wrap(description),
        epilog=epilog.strip(),
        formatter_class=HelpFormatter,
    )
    parser.set_defaults(run=run)
    add_output_options(parser, default=argparse.SUPPRESS)
    return parser


def add_output_options(parser, default: Any) -> None:
    """``-q`` and ``--debug``, accepted before and after the command."""
    # A command's own default must not override a value given before it, hence SUPPRESS there.
    parser.add_argument(
        "-q", "--quiet", action="store_true", default=default, help="no progress bars or notes"
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        default=default,
        help="on an error, show the traceback instead of one line",
    )


def add_autoencoder_options(
    parser, *, vae: str | None, patch_size: int | str | None, purpose: str = ""
) -> None:
    """``--vae`` (default ``vae``; None: the operator's), ``--device``, ``--batch-size``, ....

    ``--patch-size`` defaults to ``patch_size`` (``"auto"`` also accepts ``auto``); None
    leaves it out.
    """
    group = parser.add_argument_group("autoencoder and device")
    if vae is None:  # the commands that read an operator file
        add_sha256_option(parser, "the operator file")
        vae_help = "use another copy of the operator's autoencoder (same weights)"
        group.add_argument(
            "--allow-other-autoencoder",
            action="store_true",
            help="accept an autoencoder whose weights differ from those of the fit (the "
            "operator records their fingerprint): only for one known to give the same latents",
        )
    else:
        vae_help = f"{purpose}{VAE_CHOICE} (default: %(default)s)"
    group.add_argument("--vae", default=vae, metavar="NAME|DIR", help=vae_help)
    if patch_size == "auto":
        group.add_argument(
            "--patch-size",
            type=integer_or_auto("P"),
            default="auto",
            metavar="P|auto",
            help="side of the latent patches; 'auto': 1 for latents of 16 channels or more "
            "(TAEF2), 3 below (default: %(default)s)",
        )
    elif patch_size is not None:
        _add_count(group, "--patch-size", "P", patch_size, "side of the latent patches")
    group.add_argument(
        "--device",
        default="auto",
        help="'auto' (CUDA when available), 'cpu', 'cuda:1', ... (default: %(default)s)",
    )
    group.add_argument(
        "--dtype",
        choices=("auto", "float32", "float16", "bfloat16"),
        default="auto",
        help="compute dtype of the autoencoder; 'auto': float16 on CUDA, float32 elsewhere "
        "(default: %(default)s)",
    )
    _add_count(group, "--batch-size", "N", 4, "images encoded together")


def _add_count(group, flag: str, metavar: str, default: int, help_text: str) -> None:
    group.add_argument(
        flag,
        type=integer(metavar, 1),
        default=default,
        metavar=metavar,
        help=f"{help_text} (default: %(default)s)",
    )


def add_sweep_options(
    parser, *, seed: int | None, vae: str | None, patch_size: int | str | None
) -> None:
    """The options of the commands that sweep alpha and measure: alphas, metrics, seed and
    the autoencoder's."""
    add_alphas_option(parser)
    add_metrics_option(parser)
    add_seed(parser, default=seed)
    add_autoencoder_options(parser, vae=vae, patch_size=patch_size)


def add_seed(parser, default: int | None) -> None:
    where = "the operator's" if default is None else "%(default)s"
    parser.add_argument(
        "--seed",
        type=integer("SEED", 0, MAX_SEED),
        default=default,
        metavar="SEED",
        help=f"seed of the transport noise (used when the map is stochastic; default: {where})",
    )


def add_exif_orientation_option(parser) -> None:
    parser.add_argument(
        "--no-exif-orientation",
        dest="exif_orientation",
        action="store_false",
        help="read images as stored, ignoring their EXIF orientation tag (default: turn them "
        "upright, as viewers show them)",
    )


def add_metrics_option(parser) -> None:
    parser.add_argument(
        "--metrics",
        type=metric_names,
        default=None,
        metavar="auto|NAMES",
        help=(
            "'auto': every metric that can run here (those whose package or network is "
            f"missing are skipped, with a note); or names among {', '.join(METRICS)}, "
            "comma-separated, which must all run (default: auto)"
        ),
    )


def add_alphas_option(parser) -> None:
    parser.add_argument(
        "--alphas",
        type=parse_alphas,
        default=parse_alphas(DEFAULT_ALPHAS),
        metavar="SPEC",
        help=(
            "START:STOP:STEP (both ends included, e.g. -1:2:0.25) or a list such as "
            f"0,0.5,1 (default: {DEFAULT_ALPHAS})"
        ),
    )


def attach_dash_values(argv: list[str], options: tuple[str, ...]) -> list[str]:
    """Turn ``--alphas -1:2:0.25`` into ``--alphas=-1:2:0.25``.

    argparse takes a value starting with ``-`` that is not a plain negative number for an
    option, and would refuse the ranges the help shows.

    Examples
    --------
    >>> attach_dash_values(["sweep", "--alphas", "-1:2:0.5", "-q"], ("--alphas",))
    ['sweep', '--alphas=-1:2:0.5', '-q']
    """
    joined: list[str] = []
    values = iter(argv)
    for arg in values:
        if arg in options:
            value = next(values, None)
            if value is not None and value.startswith("-"):
                joined.append(f"{arg}={value}")
                continue
            joined.append(arg)
            if value is not None:
                joined.append(value)
        else:
            joined.append(arg)
    return joined


# -- types of values ------------------------------------------------------------------------


def add_sha256_option(parser, what: str) -> None:
    """``--sha256 HEX``: refuse ``what`` (a file the command reads) unless it has that digest.

    Examples
    --------
    >>> parser = argparse.ArgumentParser()
    >>> add_sha256_option(parser, "the operator file")
    >>> parser.parse_args(["--sha256", "sha256:" + "A" * 64]).sha256 == "a" * 64
    True
    """
    parser.add_argument(
        "--sha256",
        type=lambda text: _checked(lambda: check_sha256(text, "--sha256")),
        metavar="HEX",
        help=f"refuse {what} unless its sha256 is HEX, the digest published with it "
        "(what 'sha256sum FILE' prints); see the documentation's Security and trust page",
    )


def _checked(check: Callable[[], Any]) -> Any:
    try:
        return check()
    except (TypeError, ValueError) as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def integer(name: str, minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """The type of an integer option named ``name`` in the help, from ``minimum`` on.

    Examples
    --------
    >>> integer("N", 1)("4")
    4
    >>> integer("N", 1)("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: N must be an int >= 1, got 0
    >>> integer("N", 4, 8)("9")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: N must be an int in [4, 8], got 9
    """

    def parse(text: str) -> int:
        try:
            value: Any = int(text)
        except ValueError:
            value = text
        _checked(lambda: check_int(value, name, minimum))
        if maximum is not None and value > maximum:  # written whole: seeds run to 2**32 - 1
            raise argparse.ArgumentTypeError(
                f"{name} must be an int in [{minimum}, {maximum}], got {value}"
            )
        return value

    return parse


def integer_or_auto(name: str) -> Callable[[str], int | str]:
    """The type of an option that takes ``auto`` or an integer from 1 on.

    Examples
    --------
    >>> integer_or_auto("P")("auto"), integer_or_auto("P")("2")
    ('auto', 2)
    >>> integer_or_auto("P")("big")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: P must be 'auto' or an int >= 1, got 'big'
    """

    def parse(text: str) -> int | str:
        if text == "auto":
            return text
        if not text.strip().isdigit() or int(text) < 1:
            raise argparse.ArgumentTypeError(f"{name} must be 'auto' or an int >= 1, got {text!r}")
        return int(text)

    return parse


def _number_or_word(
    name: str, word: str, word_value: Any, accepts: Callable[[float], bool], expected: str
) -> Callable[[str], Any]:
    """The type of an option that takes ``word`` (parsed as ``word_value``) or a number that
    ``accepts`` (NaN for text that is no number), ``expected`` naming those in errors."""

    def parse(text: str) -> Any:
        if text == word:
            return word_value
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not accepts(value):
            raise argparse.ArgumentTypeError(f"{name} must be {word!r} or {expected}, got {text!r}")
        return value

    return parse


def fraction_or_auto(name: str) -> Callable[[str], float | str]:
    """The type of an option that takes ``auto`` or a number from 0 to 1.

    Examples
    --------
    >>> fraction_or_auto("S")("auto"), fraction_or_auto("S")("0.5")
    ('auto', 0.5)
    >>> fraction_or_auto("S")("2")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: S must be 'auto' or a number in [0, 1], got '2'
    """
    return _number_or_word(name, "auto", "auto", lambda v: 0 <= v <= 1, "a number in [0, 1]")


def positive_or_none(name: str) -> Callable[[str], float | None]:
    """The type of an option that takes ``none`` or a finite number above 0.

    Examples
    --------
    >>> positive_or_none("S")("none"), positive_or_none("S")("2.5")
    (None, 2.5)
    >>> positive_or_none("S")("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: S must be 'none' or a number > 0, got '0'
    """
    return _number_or_word(name, "none", None, lambda v: math.isfinite(v) and v > 0, "a number > 0")


def real(name: str, low: float | None = None) -> Callable[[str], float]:
    """The type of a finite number option named ``name`` in the help, ``low`` or more.

    Examples
    --------
    >>> real("A")("-0.5")
    -0.5
    >>> real("A")("nan")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: A must be a finite number, got nan
    """

    def parse(text: str) -> float:
        try:
            value: Any = float(text)
        except ValueError:
            value = text
        return _checked(lambda: check_real(value, name, low=low))

    return parse


def parse_alphas(text: str) -> list[float]:
    """Alphas from ``START:STOP:STEP`` (both ends included) or a comma-separated list.

    Examples
    --------
    >>> parse_alphas("-1:2:0.75")
    [-1.0, -0.25, 0.5, 1.25, 2.0]
    >>> parse_alphas("0,0.5,1")
    [0.0, 0.5, 1.0]
    """
    expected = (
        "expected START:STOP:STEP with STEP > 0 and STOP >= START (e.g. -1:2:0.25) "
        f"or a comma-separated list (e.g. 0,0.5,1); got {text!r}"
    )
    try:
        if ":" in text:
            start, stop, step = (float(part) for part in text.split(":"))
            if not step > 0 or stop < start or not math.isfinite((stop - start) / step):
                raise ValueError(expected)
            count = math.floor((stop - start) / step + 1e-9) + 1
            # Rounded so that 0.1 steps give 0.3, not 0.30000000000000004.
            values = [round(start + k * step, 10) for k in range(min(count, _MAX_ALPHAS + 1))]
        else:
            values = [float(part) for part in text.split(",")]
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(expected) from None
    if len(values) > _MAX_ALPHAS or not all(math.isfinite(value) for value in values):
        raise argparse.ArgumentTypeError(
            f"expected at most {_MAX_ALPHAS} finite alphas; got {text!r}"
        )
    return list(dict.fromkeys(values))


def parse_shard(text: str) -> tuple[int, int]:
    """``RANK/WORLD`` (0-based rank) as a pair; ``auto`` reads ``RANK`` and ``WORLD_SIZE``.

    Examples
    --------
    >>> parse_shard("1/4")
    (1, 4)
    """
    if text == "auto":
        rank, world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
        if rank is None or world is None:
            raise argparse.ArgumentTypeError(
                "'auto' reads the environment variables RANK and WORLD_SIZE, which are not set "
                "(torchrun sets them); or give RANK/WORLD, e.g. 0/2"
            )
        text = f"{rank}/{world}"
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None or not 0 <= int(match[1]) < int(match[2]):
        raise argparse.ArgumentTypeError(
            f"expected RANK/WORLD with 0 <= RANK < WORLD (e.g. 1/4), or 'auto'; got {text!r}"
        )
    return int(match[1]), int(match[2])


def metric_names(text: str) -> list[str] | None:
    """Metric names from a comma-separated list; None for ``auto``.

    Examples
    --------
    >>> metric_names("psnr, ssim,psnr")
    ['psnr', 'ssim']
    >>> metric_names("auto") is None
    True
    """
    if text == "auto":
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in METRICS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown metric(s) {', '.join(unknown) or text!r}; expected 'auto' or names among "
            f"{', '.join(METRICS)}"
        )
    return list(dict.fromkeys(names))
