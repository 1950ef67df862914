"""The metrics of a table, row by row, and the report of a sweep: table, curve, paths."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._optional import MissingExtraError
from ..apps.reports import PERCEPTION_AXES, plot_perception_distortion, write_csv, write_markdown
from ..autoencoders import load_autoencoder
from ..devices import resolve_device
from ..exceptions import MetricSkippedWarning
from ..images.folders import save_image_atomically
from ..metrics import Evaluator, latent_w2_label
from ..stats import GaussianStats
from ._console import Console

__all__ = [
    "Metrics",
    "autoencoder_for_metrics",
    "measure_and_report",
    "skipped_note",
    "wants_latent_w2",
]


def wants_latent_w2(names: list[str] | None) -> bool:
    return names is None or "latent_w2" in names


def autoencoder_for_metrics(names: list[str] | None, vae: Any, args) -> Any:
    """The autoencoder of latent W2, loaded once for every row of a table (None: not needed)."""
    if vae is None or not wants_latent_w2(names):
        return None
    return load_autoencoder(vae, device=resolve_device(args.device), dtype=args.dtype)


class Metrics:
    """Computes the same metrics for every row of a table.

    With ``names=None`` the first row takes every metric that can run here; a metric that
    cannot (a missing package, weights that cannot be downloaded) is left out, noted once,
    and not tried again for the next rows, which ask for the first row's metrics by name.
    """

    def __init__(self, names, *, autoencoder, patch_size, device, seed, console) -> None:
        self.names = names
        self.autoencoder = autoencoder
        self.patch_size = patch_size
        self.device = device
        self.seed = seed
        self.console = console
        self._evaluator: Evaluator | None = None

    def __call__(self, images, reference, *, progress=None, latent_stats=None) -> dict[str, float]:
        """The row of ``images``; the reference is measured once for every row against it
        (``progress`` is called once per image, like a tqdm bar's ``update``;
        ``latent_stats``: see `latent_ot.metrics.Evaluator`)."""
        if self._evaluator is None or self._evaluator.reference is not reference:
            self._evaluator = self._evaluator_for(reference)
        if "latent_w2" not in self._evaluator.metrics:
            latent_stats = None
        return self._evaluator(images, progress=progress, latent_stats=latent_stats)

    def _evaluator_for(self, reference) -> Evaluator:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            evaluator = Evaluator(
                reference,
                metrics=self.names,
                autoencoder=self.autoencoder,
                patch_size=self.patch_size,
                device=self.device,
                random_state=self.seed,
                verbose=not self.console.quiet,
            )
        skipped = [w.message for w in caught if isinstance(w.message, MetricSkippedWarning)]
        for other in caught:
            if not isinstance(other.message, MetricSkippedWarning):
                warnings.warn_explicit(
                    other.message,
                    other.category,
                    other.filename,
                    other.lineno,
                    module=_module_of(other.filename),
                )
        if self.names is None:
            self.names = list(evaluator.metrics)
            for line in skipped_note(skipped):
                self.console.note(line)
        return evaluator

    def labelled(self, row: dict[str, Any]) -> dict[str, Any]:
        """``row`` with the latent W2 column named with its patch size (`latent_w2_label`)."""
        label = latent_w2_label(self.patch_size)
        return {label if key == "latent_w2" else key: value for key, value in row.items()}


def _module_of(filename: str) -> str | None:
    """The dotted module name of a latent_ot file, so that the command's warning filters
    (which name modules) still tell latent-ot's own warnings from other packages'."""
    package = Path(__file__).resolve().parents[1]
    try:
        relative = Path(filename).resolve().relative_to(package.parent)
    except ValueError:
        return None
    return ".".join(relative.with_suffix("").parts)


def skipped_note(skipped: Sequence[MetricSkippedWarning]) -> list[str]:
    """The skipped metrics in one short line: which ones, why when they share one reason, and
    the command that installs what they need (the warnings themselves carry the details).

    Examples
    --------
    >>> remedy = 'pip install "latent-ot[metrics]" (or pip install torch-fidelity), or pass x'
    >>> skipped_note([
    ...     MetricSkippedWarning("fid", "torch-fidelity not installed", remedy),
    ...     MetricSkippedWarning("kid", "torch-fidelity not installed", remedy),
    ...     MetricSkippedWarning("lpips", "torchvision not installed", remedy),
    ... ])
    ['skipped fid, kid, lpips: pip install "latent-ot[metrics]"']
    >>> skipped_note([MetricSkippedWarning("is", "no network", "")])
    ['skipped is: no network']
    >>> skipped_note([])
    []
    """
    if not skipped:
        return []
    metrics = ", ".join(dict.fromkeys(warning.metric for warning in skipped))
    reasons = set(warning.reason for warning in skipped)
    remedies = dict.fromkeys(_command_of(w.remedy) for w in skipped if w.remedy)
    why = [next(iter(reasons))] if len(reasons) == 1 else []
    return [f"skipped {metrics}: {'; '.join([*why, *remedies])}"]


def _command_of(remedy: str) -> str:
    """The first way a remedy offers (``'pip install X (or ...), or pass ...'`` -> its
    command), which fits a one-line note."""
    return remedy.split(" (or ")[0].split(", or ")[0]


def measure_and_report(
    alphas: Sequence[float],
    outputs: Sequence[Any],
    reference: Any,
    metrics: Metrics,
    output: Path,
    console: Console,
    *,
    latent_stats: Mapping[float, GaussianStats | None] | None = None,
) -> None:
    """Measure a sweep's outputs, alpha by alpha; write the table (CSV, markdown) and the
    curve to ``output``; print the table and the paths. ``latent_stats``: the latent
    statistics of an alpha's images where they are known already."""
    known = latent_stats or {}
    with console.progress(total=sum(map(len, outputs)), desc="measuring", unit="img") as bar:

        def row(alpha: float, images: Any) -> dict[str, Any]:
            before = bar.n
            values = metrics(images, reference, progress=bar.update, latent_stats=known.get(alpha))
            bar.update(len(images) - (bar.n - before))  # a row measured without reading images
            return {"alpha": alpha, **values}

        rows = [row(alpha, images) for alpha, images in zip(alphas, outputs, strict=True)]
    labelled = [metrics.labelled(row) for row in rows]
    write_csv(labelled, output / "metrics.csv")
    table = write_markdown(labelled, output / "metrics.md")
    console.result(table)
    console.result(f"table: {output / 'metrics.csv'}, {output / 'metrics.md'}")
    try:
        curve = plot_perception_distortion(rows)
    except MissingExtraError as error:  # the tables are written; the curve is optional
        console.note(f"no curve: {error}")
        return
    if curve is None:
        console.note("no curve: the table needs psnr and one of " + ", ".join(PERCEPTION_AXES))
    else:
        save_image_atomically(curve, output / "curve.png")
        console.result(f"curve: {output / 'curve.png'}")
