"""Fitting and transforming across processes, and merging operators fitted apart.

The multi-process tests start two ranks as subprocesses that talk with the gloo backend over
the loopback interface only; each rank runs this very file as a script (see ``_rank_main``
at the end) and leaves its results in files. Every rank has a hard time limit and is killed
when it runs past it, or when the test ends, so a bug shows up as a failure, never as a
hang.
"""

import os
import pickle
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
import torch.distributed as dist
from PIL import Image
from sklearn.exceptions import NotFittedError

from latent_ot import GaussianStats, LatentOTTransformer
from latent_ot.distributed import (
    DistributedFitError,
    gather_stats,
    rank_and_world_size,
    report_failure,
    sum_counts,
    synchronize_fit,
    synchronizing,
    transform_dataset,
)
from latent_ot.exceptions import IncompatibleAutoencoderError
from latent_ot.images import shard

pytestmark = pytest.mark.filterwarnings("ignore:The `local_dir_use_symlinks`:UserWarning")

REPO = Path(__file__).resolve().parents[1]
RANK_TIME_LIMIT = 120  # seconds; a rank still running then is killed and the test fails
FIT_TIMEOUT = 60  # synchronize_fit's timeout where no rank is meant to fail


# -- data and the fit every test compares with --------------------------------------------------


def write_images(folder: Path, seed: int, count: int, size=(16, 16), contrast=1.0) -> list[Path]:
    """``count`` smooth-ish random RGB PNG files; their paths, sorted."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        base = rng.random((*size, 3))
        smooth = (base + np.roll(base, 1, axis=0) + np.roll(base, 1, axis=1)) / 3
        pixels = np.clip(0.5 + contrast * (smooth - 0.5), 0, 1)
        path = folder / f"{index:03d}.png"
        Image.fromarray((pixels * 255).round().astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def image_sets(workdir: Path) -> dict[str, list[Path]]:
    """The restored, natural and extra natural images the fit scenario reads."""
    return {
        name: sorted((workdir / name).glob("*.png")) for name in ("restored", "natural", "extra")
    }


def fit_operator(vae: str, restored, natural, extra) -> LatentOTTransformer:
    """The calls each rank makes on its shard, and the reference makes on all images.

    The second call streams only natural images, fewer than there are ranks: one rank gets
    none and must still take part. One image per batch: a float32 encoder's output depends on
    the batch it is in, and the test is about the exchange, not about that.
    """
    dot = LatentOTTransformer(vae=vae, device="cpu", random_state=0, batch_size=1)
    dot.fit(restored, natural)
    dot.partial_fit(natural=extra)
    return dot


def relative_error(actual, expected) -> float:
    actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)
    return float((actual - expected).norm() / expected.norm())


def stats_state(stats: GaussianStats) -> tuple:
    return stats.count, stats.mean.clone(), stats.scatter.clone()


# -- running ranks -------------------------------------------------------------------------------


def run_ranks(
    scenario: str, workdir: Path, *args: str, world_size: int = 2, lingering=()
) -> dict[int, int]:
    """Run ``scenario`` on ranks ``0 .. world_size - 1``; their exit codes.

    Ranks in ``lingering`` are not waited for: they are killed once the others exited.
    Raises AssertionError, with every rank's output, when a rank that should exit does not
    within ``RANK_TIME_LIMIT`` seconds.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    # gloo talks over the loopback interface only; the rendezvous is a file in workdir.
    env["GLOO_SOCKET_IFNAME"] = "lo0" if sys.platform == "darwin" else "lo"
    env["OMP_NUM_THREADS"] = "1"
    processes, logs = {}, {}
    try:
        for rank in range(world_size):
            logs[rank] = workdir / f"rank{rank}.log"
            with open(logs[rank], "wb") as log:
                command = [sys.executable, __file__, scenario, str(rank), str(world_size)]
                processes[rank] = subprocess.Popen(
                    [*command, str(workdir), *args],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=REPO,
                )
        deadline = time.monotonic() + RANK_TIME_LIMIT
        codes = {}
        for rank, process in processes.items():
            if rank in lingering:
                continue
            try:
                codes[rank] = process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                raise AssertionError(
                    f"rank {rank} of {scenario!r} still runs after {RANK_TIME_LIMIT} s\n"
                    + _read_logs(logs)
                ) from None
        return codes
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


def _read_logs(logs: dict[int, Path]) -> str:
    return "\n".join(
        f"--- rank {rank} ---\n{path.read_text(errors='replace')[-4000:]}"
        for rank, path in logs.items()
        if path.exists()
    )


def check_exit_codes(codes: dict[int, int], workdir: Path) -> None:
    logs = {rank: workdir / f"rank{rank}.log" for rank in codes}
    assert all(code == 0 for code in codes.values()), f"exit codes {codes}\n{_read_logs(logs)}"


# -- two ranks at work: one run of both processes for the fit, report and transform tests ----------


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory, tiny_models_dir) -> Path:
    """A folder where two ranks have fitted, reported a failure and transformed a dataset
    (``_rank_work``); starting processes takes seconds, so they do it all in one run."""
    workdir = tmp_path_factory.mktemp("two_ranks")
    write_images(workdir / "restored", 0, 5, contrast=0.5)
    write_images(workdir / "natural", 1, 4, size=(16, 20), contrast=1.5)
    write_images(workdir / "extra", 2, 1, contrast=1.2)
    np.save(workdir / "probe.npy", np.random.default_rng(3).random((16, 16, 3)))

    inputs = write_images(workdir / "inputs", 4, 10)
    dot = LatentOTTransformer(vae="pixel", device="cpu", random_state=0)
    dot.fit(inputs[:5], write_images(workdir / "transform-natural", 5, 3, contrast=1.5))
    joblib.dump(dot, workdir / "operator.joblib")

    kl_vae = str(tiny_models_dir / "sd-vae-ft-mse")
    check_exit_codes(run_ranks("work", workdir, kl_vae), workdir)
    return workdir


def _rank_work(rank: int, world_size: int, workdir: Path, kl_vae: str) -> None:
    _rank_fit(rank, world_size, workdir, kl_vae)
    _rank_report(rank, world_size, workdir)
    _rank_transform(rank, world_size, workdir)


# -- distributed fit -----------------------------------------------------------------------------


def test_two_ranks_fitting_halves_equal_one_process_fitting_all(two_ranks, tiny_models_dir):
    kl_vae = str(tiny_models_dir / "sd-vae-ft-mse")
    results = [torch.load(two_ranks / f"fit-{rank}.pt", weights_only=False) for rank in (0, 1)]
    probe = np.load(two_ranks / "probe.npy")
    sets = image_sets(two_ranks)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as on the ranks: the encoder's sums in the same order
    try:
        references = {
            vae: fit_operator(vae, sets["restored"], sets["natural"], sets["extra"])
            for vae in ("pixel", kl_vae)
        }
    finally:
        torch.set_num_threads(threads)
    for vae, reference in references.items():
        ranks = [result[vae] for result in results]
        for side in ("restored", "natural"):
            expected = getattr(reference, f"{side}_stats_")
            for rank in ranks:
                count, mean, scatter = rank[side]
                assert count == expected.count
                assert relative_error(mean, expected.mean) < 1e-12
                assert relative_error(scatter, expected.scatter) < 1e-12
            # every rank ends with bitwise the same statistics
            assert ranks[0][side][0] == ranks[1][side][0]
            assert torch.equal(ranks[0][side][1], ranks[1][side][1])
            assert torch.equal(ranks[0][side][2], ranks[1][side][2])
        for rank in ranks:
            assert rank["n_images"] == (5, 5)
        assert np.array_equal(ranks[0]["probe"], ranks[1]["probe"])
        np.testing.assert_allclose(ranks[0]["probe"], reference.transform(probe), atol=1e-6)


def _rank_fit(rank: int, world_size: int, workdir: Path, kl_vae: str) -> None:
    sets = image_sets(workdir)
    mine = {name: shard(paths, rank, world_size) for name, paths in sets.items()}
    probe = np.load(workdir / "probe.npy")
    results = {}
    for vae in ("pixel", kl_vae):
        with synchronize_fit(timeout=FIT_TIMEOUT):
            dot = fit_operator(vae, mine["restored"], mine["natural"], mine["extra"])
        results[vae] = {
            "restored": stats_state(dot.restored_stats_),
            "natural": stats_state(dot.natural_stats_),
            "n_images": (dot.n_images_restored_, dot.n_images_natural_),
            "probe": dot.transform(probe),
        }
    torch.save(results, workdir / f"fit-{rank}.pt")


# -- a rank that fails ---------------------------------------------------------------------------


@pytest.mark.parametrize("failed_rank_exits", [True, False], ids=["exits", "stays-alive"])
def test_a_rank_failing_mid_fit_makes_the_others_raise_instead_of_hanging(
    tmp_path, failed_rank_exits
):
    write_images(tmp_path / "restored", 0, 4)
    write_images(tmp_path / "natural", 1, 4)
    # The second file, in rank 1's share, is not an image: rank 1 fails in its first batch.
    (tmp_path / "restored" / "001.png").write_bytes(b"this is not a PNG file")
    mode = "exit" if failed_rank_exits else "stay"
    # Rank 1 either exits or sleeps long past the fit's timeout; rank 0 must exit by itself
    # (a collective left pending would keep it from exiting while rank 1 lives).
    codes = run_ranks("fail", tmp_path, mode, lingering=() if failed_rank_exits else (1,))

    check_exit_codes({0: codes[0]}, tmp_path)
    kind, message, fitted = (tmp_path / "fail-0.txt").read_text().split("\n", 2)
    assert kind == "DistributedFitError"
    assert message.startswith("rank 0:")
    # Told by rank 1 itself (report_failure), or noticed by its silence or its exit.
    assert "rank 1 failed with ImageReadError" in message or "stopped responding" in message
    assert fitted == "not fitted"
    assert "ImageReadError" in (tmp_path / "fail-1.txt").read_text()
    if failed_rank_exits:
        assert codes[1] != 0


def _rank_fail(rank: int, world_size: int, workdir: Path, mode: str) -> None:
    sets = image_sets(workdir)
    dot = LatentOTTransformer(vae="pixel", device="cpu")
    try:
        with synchronize_fit(timeout=5):
            dot.fit(
                shard(sets["restored"], rank, world_size), shard(sets["natural"], rank, world_size)
            )
    except Exception as error:
        fitted = "fitted" if hasattr(dot, "gaussian_ot_") else "not fitted"
        text = f"{type(error).__name__}\n{str(error).replace(chr(10), ' ')}\n{fitted}"
        (workdir / f"fail-{rank}.txt").write_text(text)
        if rank == 1 and mode == "exit":
            raise
        if rank == 1:
            time.sleep(10 * RANK_TIME_LIMIT)  # alive, but never at the exchange
        return
    (workdir / f"fail-{rank}.txt").write_text("no error\n\nfitted")


def test_a_reported_failure_is_raised_on_the_other_ranks_and_the_group_stays_usable(two_ranks):
    first, second, third = (two_ranks / "report-0.txt").read_text().split("\n")
    assert first.startswith("DistributedFitError: rank 0:")
    assert "rank 1 failed with ValueError: 009.png: cannot identify image file" in first
    # the next exchange works, on both ranks: the failure left no collective behind
    assert second == "merged 10"
    reported, merged, mismatch = (two_ranks / "report-1.txt").read_text().split("\n")
    assert (reported, merged) == ("reported", "merged 10")
    # statistics of different dimensions are refused on every rank, before any merge
    for rank, message in enumerate([third, mismatch]):
        assert message.startswith(f"DistributedFitError: rank {rank}: the ranks fit patch")
        assert "rank 0: [1], rank 1: [2]" in message


def _rank_report(rank: int, world_size: int, workdir: Path) -> None:
    local = GaussianStats.from_samples(torch.arange(3.0 + 4 * rank).reshape(-1, 1))
    lines = []
    with synchronize_fit(timeout=FIT_TIMEOUT):
        if rank == 1:
            report_failure(ValueError("009.png: cannot identify image file"))
            lines.append("reported")
        else:
            try:
                gather_stats([local])
                lines.append("no error")
            except DistributedFitError as error:
                lines.append(f"DistributedFitError: {error}")
        lines.append(f"merged {gather_stats([local])[0].count}")
        try:  # statistics of different lengths on the two ranks
            gather_stats([GaussianStats.from_samples(torch.ones(2, 1 + rank))])
        except DistributedFitError as error:
            lines.append(f"DistributedFitError: {error}")
    (workdir / f"report-{rank}.txt").write_text("\n".join(lines))


# -- distributed transform -----------------------------------------------------------------------


def test_two_ranks_transform_a_dataset_writing_each_output_exactly_once(two_ranks):
    inputs = sorted((two_ranks / "inputs").glob("*.png"))
    dot = joblib.load(two_ranks / "operator.joblib")
    ranks = [torch.load(two_ranks / f"transform-{r}.pt", weights_only=False) for r in (0, 1)]
    outputs = [two_ranks / "out" / path.name for path in inputs]

    # ranks that see different inputs refuse before writing anything
    for rank in ranks:
        assert rank["mismatch"].startswith("DistributedFitError")
        assert "see other input files than rank 0" in rank["mismatch"]
    # each rank did its own share; together, every file exactly once
    done = [set(rank["processed"]) for rank in ranks]
    assert done[0].isdisjoint(done[1])
    assert done[0] | done[1] == set(inputs)
    first = ranks[0]["first"]
    assert sorted(first.written) == outputs and not first.skipped and first.ok
    assert ranks[1]["first"] == first  # every rank gets the report of all ranks
    for path, output in zip(inputs, outputs, strict=True):
        written = np.asarray(Image.open(output), dtype=np.int16)
        expected = np.asarray(dot.transform(path), dtype=np.int16)
        # at most one level apart: another thread count may round a sum differently
        assert np.abs(written - expected).max() <= 1, output.name
    # resuming after losing three outputs rewrites those three only
    second = ranks[0]["second"]
    assert sorted(second.written) == [outputs[i] for i in (2, 5, 7)]
    assert sorted(second.skipped) == [p for i, p in enumerate(inputs) if i not in (2, 5, 7)]
    assert ranks[1]["second"] == second


def _rank_transform(rank: int, world_size: int, workdir: Path) -> None:
    dot = joblib.load(workdir / "operator.joblib")
    inputs, output_dir = workdir / "inputs", workdir / "out"
    result = {"processed": []}
    files = sorted(inputs.glob("*.png"))
    try:
        transform_dataset(dot, files[: 10 - rank], output_dir, timeout=FIT_TIMEOUT)
        result["mismatch"] = "no error"
    except DistributedFitError as error:
        result["mismatch"] = f"DistributedFitError: {error}"
    assert not output_dir.exists() or not any(output_dir.iterdir())
    result["first"] = transform_dataset(
        dot, inputs, output_dir, timeout=FIT_TIMEOUT, on_file=result["processed"].append
    )
    dist.barrier()
    if rank == 0:
        for index in (2, 5, 7):
            (output_dir / f"{index:03d}.png").unlink()
    dist.barrier()
    result["second"] = transform_dataset(dot, inputs, output_dir, skip_existing=True)
    torch.save(result, workdir / f"transform-{rank}.pt")


def test_transform_dataset_without_a_process_group_does_every_file(tmp_path):
    inputs = write_images(tmp_path / "inputs", 4, 3)
    dot = LatentOTTransformer(vae="pixel", device="cpu").fit(inputs, inputs[::-1])
    seen = []
    report = transform_dataset(dot, tmp_path / "inputs", tmp_path / "out", on_file=seen.append)
    assert sorted(report.written) == [tmp_path / "out" / p.name for p in inputs]
    assert seen == inputs and report.ok

    again = transform_dataset(dot, tmp_path / "inputs", tmp_path / "out", skip_existing=True)
    assert again.skipped == inputs and not again.written


def test_transform_dataset_refuses_an_unfitted_operator_before_writing(tmp_path):
    inputs = write_images(tmp_path / "inputs", 4, 2)
    with pytest.raises(NotFittedError):
        transform_dataset(LatentOTTransformer(vae="pixel"), inputs, tmp_path / "out")
    with pytest.raises(TypeError, match="operator must have a transform method"):
        transform_dataset(object(), inputs, tmp_path / "out")
    fitted = LatentOTTransformer(vae="pixel").fit(inputs, inputs)
    with pytest.raises(ValueError, match="timeout must be a positive number of seconds, got -1"):
        transform_dataset(fitted, inputs, tmp_path / "out", timeout=-1)
    assert not (tmp_path / "out").exists()


# -- without a process group nothing changes -----------------------------------------------------


def test_without_a_process_group_nothing_is_exchanged():
    assert not dist.is_initialized()
    assert rank_and_world_size() == (0, 1)
    assert not synchronizing()
    with pytest.raises(RuntimeError, match="needs an initialised torch"):
        with synchronize_fit():
            pass
    local = GaussianStats.from_samples(torch.randn(5, 2, dtype=torch.float64))
    copied = gather_stats([local])[0]
    assert copied == local and copied is not local
    assert sum_counts([2, 3]) == [2, 3]
    report_failure(ValueError("nobody listens"))  # a no-op, not an error


# -- merging operators fitted apart --------------------------------------------------------------


@pytest.fixture
def disjoint_fits(tmp_path):
    restored = write_images(tmp_path / "restored", 0, 4, contrast=0.5)
    natural = write_images(tmp_path / "natural", 1, 5, size=(16, 20), contrast=1.5)

    def fit(restored_part, natural_part, **params):
        operator = LatentOTTransformer(vae="pixel", device="cpu", random_state=0, **params)
        return operator.fit(restored_part, natural_part)

    return fit, restored, natural


def test_merging_operators_fitted_on_disjoint_data_equals_fitting_on_the_union(disjoint_fits):
    fit, restored, natural = disjoint_fits
    first, second = fit(restored[:1], natural[:3]), fit(restored[1:], natural[3:])
    before = stats_state(first.restored_stats_)
    union = fit(restored, natural)

    for merged in (first + second, first.merge(second), second + first):
        for side in ("restored", "natural"):
            actual, expected = getattr(merged, f"{side}_stats_"), getattr(union, f"{side}_stats_")
            assert actual.count == expected.count
            assert relative_error(actual.mean, expected.mean) < 1e-12
            assert relative_error(actual.scatter, expected.scatter) < 1e-12
        assert (merged.n_images_restored_, merged.n_images_natural_) == (4, 5)
        probe = np.asarray(Image.open(restored[0]))
        np.testing.assert_allclose(
            merged.transform(probe / 255.0), union.transform(probe / 255.0), atol=1e-6
        )
    # the operands are left as they were
    count, mean, scatter = stats_state(first.restored_stats_)
    assert count == before[0] and torch.equal(mean, before[1]) and torch.equal(scatter, before[2])


def test_merging_operators_with_different_patch_sizes_says_so(disjoint_fits):
    fit, restored, natural = disjoint_fits
    with pytest.raises(IncompatibleAutoencoderError, match="patch_size") as caught:
        fit(restored[:2], natural[:2]) + fit(restored[2:], natural[2:], patch_size=5)
    assert "3" in str(caught.value) and "5" in str(caught.value)


def test_merging_operators_with_different_autoencoders_names_both(disjoint_fits, tiny_models_dir):
    fit, restored, natural = disjoint_fits
    kl_vae = str(tiny_models_dir / "sd-vae-ft-mse")
    kl = LatentOTTransformer(vae=kl_vae, device="cpu").fit(restored[2:], natural[2:])
    with pytest.raises(IncompatibleAutoencoderError, match="cannot merge") as caught:
        fit(restored[:2], natural[:2]).merge(kl)
    assert "pixel" in str(caught.value) and kl_vae in str(caught.value)


def test_operators_fitted_with_copies_of_one_autoencoder_instance_merge(
    disjoint_fits, tiny_kl_model
):
    # On Dask or Ray workers each operator holds its own unpickled copy of the model.
    _, restored, natural = disjoint_fits

    def fit(vae, images, references):
        operator = LatentOTTransformer(vae=vae, device="cpu", random_state=0)
        return operator.fit(images, references)

    first = fit(tiny_kl_model, restored[:2], natural[:2])
    second = fit(pickle.loads(pickle.dumps(tiny_kl_model)), restored[2:], natural[2:])
    merged = first + second
    assert merged.restored_stats_ == first.restored_stats_ + second.restored_stats_

    altered = pickle.loads(pickle.dumps(tiny_kl_model))
    with torch.no_grad():
        next(altered.parameters()).add_(1.0)
    other = fit(altered, restored[2:], natural[2:])
    with pytest.raises(IncompatibleAutoencoderError, match="cannot merge") as caught:
        first + other
    assert str(caught.value).count("AutoencoderKL with weights") == 2


def test_merging_needs_two_fitted_operators(disjoint_fits):
    fit, restored, natural = disjoint_fits
    fitted = fit(restored, natural)
    with pytest.raises(NotFittedError, match="other has not been fitted"):
        fitted + LatentOTTransformer(vae="pixel")
    with pytest.raises(TypeError, match="LatentOTTransformer"):
        fitted.merge(GaussianStats(3))


# -- what each rank runs -------------------------------------------------------------------------

_RANK_SCENARIOS = {"work": _rank_work, "fail": _rank_fail}


def _rank_main(scenario: str, rank: str, world_size: str, workdir: str, *args: str) -> None:
    """One rank of ``scenario``: join the process group of the others, run, leave."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    torch.set_num_threads(1)
    rank, world_size, workdir = int(rank), int(world_size), Path(workdir)
    dist.init_process_group(
        "gloo",
        init_method=(workdir / "rendezvous").as_uri(),
        rank=rank,
        world_size=world_size,
        # Far beyond the test's own limit: the tests show that latent-ot's timeouts act.
        timeout=timedelta(seconds=10 * RANK_TIME_LIMIT),
    )
    _RANK_SCENARIOS[scenario](rank, world_size, workdir, *args)
    # Leave together and tear gloo down before the interpreter does: torn down during
    # interpreter exit, with a peer already gone, gloo sometimes aborts the process.
    if scenario == "work":
        dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    _rank_main(*sys.argv[1:])
