"""Reading and writing image files on worker threads while the autoencoder computes: the same
images, order, errors and outputs as reading, transforming and writing each file in turn."""

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import latent_ot.images._prefetch as prefetch_module
from latent_ot.exceptions import ImageReadError
from latent_ot.images import ImageSource, transform_files
from latent_ot.images._prefetch import PREFETCH_DEPTH
from latent_ot.pipeline.statistics import latent_patch_stats, stack_pixels

READ_THREAD = "latent-ot-read"


def write_images(folder: Path, count: int = 7, broken: tuple[int, ...] = ()) -> list[Path]:
    """PNG and JPEG files of mixed sizes and modes; the indices in ``broken`` are not images."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        suffix = ".jpg" if index % 3 == 2 else ".png"
        path = folder / f"image_{index:02d}{suffix}"
        if index in broken:
            path.write_bytes(b"not an image at all")
        else:
            shape = (16 + 4 * index, 24 + 8 * (index % 3), 3)
            pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
            image = Image.fromarray(pixels).convert("L" if index % 4 == 3 else "RGB")
            image.save(path)
        paths.append(path)
    return paths


@pytest.fixture
def opened_on(monkeypatch):
    """The names of the threads that opened each image file, in order of opening."""
    opened: list[tuple[str, str]] = []
    real_open = Image.open

    def recording_open(path, *args, **kwargs):
        opened.append((Path(path).name, threading.current_thread().name))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(Image, "open", recording_open)
    return opened


def items_of(source):
    return [(item.name, item.pixels, np.asarray(item.original())) for item in source]


# --------------------------------------------------------------------------------------------
# ImageSource: directories and lists of files read ahead
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("as_list", [False, True], ids=["directory", "list"])
def test_files_read_ahead_are_the_files_read_in_turn(tmp_path, as_list, opened_on):
    paths = write_images(tmp_path / "in")
    images = paths if as_list else tmp_path / "in"
    sequential = items_of(ImageSource(images, prefetch=0))
    assert {thread for _, thread in opened_on} == {threading.current_thread().name}
    opened_on.clear()
    ahead = items_of(ImageSource(images))
    assert [name for name, _, _ in ahead] == [name for name, _, _ in sequential]
    for (_, pixels, original), (_, expected_pixels, expected_original) in zip(
        ahead, sequential, strict=True
    ):
        assert torch.equal(pixels, expected_pixels)
        assert np.array_equal(original, expected_original)
    # Every file was decoded once, on the worker thread: nothing read twice.
    assert sorted(opened_on) == sorted((path.name, opened_on[0][1]) for path in paths)
    assert opened_on[0][1].startswith(READ_THREAD)


def test_reading_ahead_is_bounded(tmp_path, opened_on):
    paths = write_images(tmp_path / "in", count=9)
    for position, _ in enumerate(ImageSource(paths, prefetch=2)):
        # The image in use and at most two more have been opened, never the whole folder.
        assert position + 1 <= len(opened_on) <= position + 1 + 2
    assert len(opened_on) == len(paths)


def test_a_broken_file_fails_in_its_turn_with_its_name(tmp_path):
    write_images(tmp_path / "in", broken=(3,))
    for prefetch in (0, PREFETCH_DEPTH):
        names = []
        with pytest.raises(ImageReadError) as raised:
            for item in ImageSource(tmp_path / "in", prefetch=prefetch):
                names.append(item.name)
        assert len(names) == 3  # the images before it were read, in order
        assert "image_03.png" in str(raised.value)
        assert str(raised.value).startswith("images[3] (")
        if prefetch == 0:
            expected = str(raised.value)
    assert str(raised.value) == expected  # the very message of the sequential read


def test_a_generator_is_read_one_element_at_a_time(tmp_path, opened_on):
    paths = write_images(tmp_path / "in", count=4)
    taken = []

    def files():
        for path in paths:
            taken.append(path)
            yield path

    for position, _ in enumerate(ImageSource(files())):
        assert len(taken) == position + 1
    assert {thread for _, thread in opened_on} == {threading.current_thread().name}


def test_prefetch_is_checked(tmp_path):
    with pytest.raises(ValueError, match=r"prefetch must be an int >= 0, got -1"):
        ImageSource(tmp_path, prefetch=-1)
    with pytest.raises(TypeError, match=r"prefetch must be an int >= 0, got float 2.0"):
        transform_files(lambda path: path, [], tmp_path, prefetch=2.0)


def test_fit_statistics_of_a_folder_do_not_depend_on_reading_ahead(tmp_path):
    from latent_ot.autoencoders import load_autoencoder

    write_images(tmp_path / "in", count=6)
    pixel = load_autoencoder("pixel")

    def stats(images):
        return [(s.count, s.mean, s.scatter) for s, _ in latent_patch_stats(images, pixel, 3)]

    ahead, sequential = stats(tmp_path / "in"), stats(ImageSource(tmp_path / "in", prefetch=0))
    assert len(ahead) == len(sequential) > 1
    for (count, mean, scatter), (count_0, mean_0, scatter_0) in zip(ahead, sequential, strict=True):
        assert count == count_0 and torch.equal(mean, mean_0) and torch.equal(scatter, scatter_0)


# --------------------------------------------------------------------------------------------
# transform_files: decoding ahead, writing behind
# --------------------------------------------------------------------------------------------


def invert(path):
    """A transform that reads its file through latent-ot, as LatentOTTransformer does."""
    source = ImageSource(path)
    item = next(iter(source))
    return source.collect([item.to_output(1 - item.pixels)])


def run_folder(tmp_path, name, transform, prefetch, **options):
    done = []
    report = transform_files(
        transform,
        tmp_path / "in",
        tmp_path / name,
        prefetch=prefetch,
        on_file=done.append,
        **options,
    )
    return report, done


def test_transform_files_gives_the_outputs_and_report_of_the_sequential_path(tmp_path, opened_on):
    paths = write_images(tmp_path / "in", count=8, broken=(2, 5))
    sequential, done_0 = run_folder(tmp_path, "sequential", invert, 0)
    assert {thread for _, thread in opened_on} == {threading.current_thread().name}
    opened_on.clear()
    overlapped, done = run_folder(tmp_path, "overlapped", invert, PREFETCH_DEPTH)

    assert done == done_0 == paths  # on_file in input order, every file once
    assert [path.name for path in overlapped.written] == [path.name for path in sequential.written]
    assert [path.name for path in overlapped.written] == [
        path.name for index, path in enumerate(paths) if index not in (2, 5)
    ]
    assert overlapped.failed == sequential.failed  # same files, same reasons, same order
    assert [path for path, _ in overlapped.failed] == [paths[2], paths[5]]
    assert "image_02.jpg" in overlapped.failed[0][1]
    for written in sequential.written:
        again = tmp_path / "overlapped" / written.name
        assert again.read_bytes() == written.read_bytes()
    # Atomic writes: nothing but the outputs in the folder.
    assert sorted(p.name for p in (tmp_path / "overlapped").iterdir()) == sorted(
        p.name for p in overlapped.written
    )
    # The files after the first were decoded ahead, on the worker thread, each once.
    ahead = [name for name, thread in opened_on if thread.startswith(READ_THREAD)]
    assert set(ahead) >= {path.name for path in paths[3:] if path not in (paths[5],)}
    assert len(ahead) == len(set(ahead))


def test_a_transform_that_does_not_read_its_files_costs_no_decoding(tmp_path, opened_on):
    paths = write_images(tmp_path / "in", count=5)
    made = {path: Image.new("RGB", (8, 8), (index, 0, 0)) for index, path in enumerate(paths)}
    report, _ = run_folder(tmp_path, "out", made.__getitem__, PREFETCH_DEPTH)
    assert len(report.written) == 5 and opened_on == []
    with Image.open(tmp_path / "out" / paths[3].name) as image:
        assert image.getpixel((0, 0)) == (3, 0, 0)


def test_outputs_are_png_at_the_fast_level_and_jpeg_at_quality_95(tmp_path):
    import io

    from latent_ot.images.folders import PNG_COMPRESS_LEVEL

    paths = write_images(tmp_path / "in", count=3)  # two PNG files, one JPEG
    report, _ = run_folder(tmp_path, "out", invert, PREFETCH_DEPTH)
    assert PNG_COMPRESS_LEVEL == 1 and len(report.written) == 3
    for path, written in zip(paths, report.written, strict=True):
        expected = io.BytesIO()
        options = {"quality": 95} if path.suffix == ".jpg" else {"compress_level": 1}
        invert(path).save(expected, format=Image.registered_extensions()[path.suffix], **options)
        assert written.read_bytes() == expected.getvalue()


def test_a_write_that_fails_is_reported_in_its_turn(tmp_path):
    paths = write_images(tmp_path / "in", count=5)
    for name in ("sequential", "overlapped"):
        (tmp_path / name / paths[1].name).mkdir(parents=True)  # an output that cannot be replaced
    sequential, _ = run_folder(tmp_path, "sequential", invert, 0)
    overlapped, done = run_folder(tmp_path, "overlapped", invert, PREFETCH_DEPTH)
    assert done == paths
    assert [path for path, _ in overlapped.failed] == [paths[1]]
    assert [path for path, _ in sequential.failed] == [paths[1]]
    reason = overlapped.failed[0][1]  # the temporary file's name is random; the rest is not
    assert reason.startswith("IsADirectoryError: ") and str(tmp_path / "overlapped") in reason
    assert [p.name for p in overlapped.written] == [p.name for p in sequential.written]


def test_skipped_files_keep_their_turn(tmp_path):
    paths = write_images(tmp_path / "in", count=6)
    run_folder(tmp_path, "out", invert, 0)
    for path in paths[::2]:
        (tmp_path / "out" / path.name).unlink()
    report, done = run_folder(tmp_path, "out", invert, PREFETCH_DEPTH, skip_existing=True)
    assert done == paths
    assert report.skipped == paths[1::2]
    assert [p.name for p in report.written] == [p.name for p in paths[::2]]


def test_an_error_that_stops_the_run_leaves_whole_outputs_only(tmp_path):
    paths = write_images(tmp_path / "in", count=6)

    def stop_at_the_fourth(path):
        if path == paths[3]:
            raise RuntimeError("the model broke")
        return invert(path)

    with pytest.raises(RuntimeError, match="the model broke"):
        run_folder(tmp_path, "out", stop_at_the_fourth, PREFETCH_DEPTH)
    # The outputs of the files before it were written whole, and nothing else is there.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [p.name for p in paths[:3]]
    for path in paths[:3]:
        with Image.open(tmp_path / "out" / path.name) as image:
            image.load()
    assert prefetch_module._files_ahead.get() is None  # the block was left


# --------------------------------------------------------------------------------------------
# Pinned host memory on CUDA
# --------------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_stack_pixels_copies_through_pinned_memory_to_the_same_values():
    items = list(ImageSource([np.random.default_rng(0).random((6, 5, 3)) for _ in range(3)]))
    batch = list(enumerate(items))
    on_gpu = stack_pixels(batch, "cuda")
    assert on_gpu.device.type == "cuda"
    assert torch.equal(on_gpu.cpu(), torch.stack([item.pixels for item in items]))


def test_stack_pixels_on_the_cpu_is_a_plain_stack():
    items = list(ImageSource([np.random.default_rng(1).random((6, 5, 3)) for _ in range(2)]))
    stacked = stack_pixels(list(enumerate(items)), "cpu")
    assert not stacked.is_pinned()
    assert torch.equal(stacked, torch.stack([item.pixels for item in items]))
