"""Tests for latent_ot.images: images of every kind in, float pixels, the
caller's kind back out."""

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import ExifTags, Image, ImageCms, ImageOps

import latent_ot.images
import latent_ot.images.folders
from latent_ot.exceptions import ImageReadError
from latent_ot.images import ImageItem, ImageSource, expand_inputs
from latent_ot.images._png16 import png16_bytes
from latent_ot.pipeline import crop_to, pad_to_multiple

LAYOUT_SHAPES = {"HW": (5, 7), "HW1": (5, 7, 1), "HW3": (5, 7, 3), "HW4": (5, 7, 4)}


def random_array(shape, dtype, seed=0):
    """Random pixels covering the whole range of `dtype`, extremes included."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype.kind == "u":
        values = rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True)
    else:
        values = rng.random(size=shape)
    values = values.astype(dtype)
    values.flat[0], values.flat[-1] = 0, (np.iinfo(dtype).max if dtype.kind == "u" else 1)
    return values


def only_item(images) -> ImageItem:
    items = list(ImageSource(images))
    assert len(items) == 1
    return items[0]


def round_trip(images):
    """Read `images`, write the unchanged pixels back, and collect them."""
    source = ImageSource(images)
    return source.collect([item.to_output(item.pixels) for item in source])


def pil_pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


# PIL images


def make_pil(mode: str) -> Image.Image:
    if mode in ("L", "LA", "RGB", "RGBA"):
        channels = {"L": (), "LA": (2,), "RGB": (3,), "RGBA": (4,)}[mode]
        return Image.fromarray(random_array((6, 9, *channels), np.uint8))
    if mode == "I;16":
        return Image.fromarray(random_array((6, 9), np.uint16))
    if mode == "I":
        return Image.fromarray(random_array((6, 9), np.uint16).astype(np.int32))
    if mode == "I;16B":  # big-endian 16-bit, as some TIFF files hold
        data = random_array((6, 9), np.uint16).astype(">u2").tobytes()
        return Image.frombytes(mode, (9, 6), data)
    assert mode == "F"
    return Image.fromarray(random_array((6, 9), np.float32))


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "I;16", "I;16B", "I", "F"])
def test_pil_round_trip_is_exact_in_the_same_mode(mode):
    image = make_pil(mode)
    output = round_trip(image)
    assert isinstance(output, Image.Image)
    assert output.mode == mode
    assert output.size == image.size
    np.testing.assert_array_equal(pil_pixels(output), pil_pixels(image))


@pytest.mark.parametrize("mode", ["L", "I;16", "I", "F"])
def test_pil_grayscale_is_replicated_to_three_channels(mode):
    pixels = only_item(make_pil(mode)).pixels
    assert pixels.shape == (3, 6, 9)
    assert torch.equal(pixels[0], pixels[1]) and torch.equal(pixels[0], pixels[2])


def test_pil_grayscale_is_returned_as_luminance():
    item = only_item(Image.new("L", (4, 3), 0))
    red = torch.zeros(3, 3, 4)
    red[0] = 1.0
    output = item.to_output(red)
    assert output.mode == "L"
    assert set(pil_pixels(output).ravel()) == {round(0.299 * 255)}


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_pil_alpha_is_reattached_unchanged(mode):
    image = make_pil(mode)
    item = only_item(image)
    output = item.to_output(torch.zeros_like(item.pixels))
    assert output.mode == mode
    np.testing.assert_array_equal(pil_pixels(output)[..., -1], pil_pixels(image)[..., -1])
    assert not pil_pixels(output)[..., :-1].any()


def test_pil_palette_is_returned_as_rgb():
    image = make_pil("RGB").quantize(colors=16)
    output = round_trip(image)
    assert output.mode == "RGB"
    np.testing.assert_array_equal(pil_pixels(output), pil_pixels(image.convert("RGB")))


def test_pil_palette_with_transparency_is_returned_as_rgba_with_its_alpha():
    image = make_pil("RGB").quantize(colors=16)
    image.info["transparency"] = 3
    output = round_trip(image)
    assert output.mode == "RGBA"
    np.testing.assert_array_equal(pil_pixels(output), pil_pixels(image.convert("RGBA")))
    assert (pil_pixels(output)[..., 3] == 0).any()


def test_pil_bilevel_is_returned_as_grayscale():
    image = make_pil("L").convert("1")
    output = round_trip(image)
    assert output.mode == "L"
    np.testing.assert_array_equal(pil_pixels(output), pil_pixels(image.convert("L")))


@pytest.mark.parametrize("mode", ["CMYK", "YCbCr"])
def test_pil_cmyk_and_ycbcr_keep_their_mode(mode):
    image = make_pil("RGB").convert(mode)
    output = round_trip(image)
    assert (output.mode, output.size) == (mode, image.size)
    difference = pil_pixels(output).astype(int) - pil_pixels(image).astype(int)
    assert np.abs(difference).max() <= 2  # PIL's conversions are not exact inverses


def test_pil_original_is_an_equal_copy():
    image = make_pil("RGBA")
    copy = only_item(image).original()
    assert copy is not image
    assert copy.mode == image.mode
    assert copy.tobytes() == image.tobytes()
    copy.putpixel((0, 0), (1, 2, 3, 4))
    assert image.getpixel((0, 0)) != (1, 2, 3, 4)


# numpy arrays


@pytest.mark.parametrize("layout", LAYOUT_SHAPES)
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float16, np.float32])
def test_array_round_trip_is_exact(layout, dtype):
    array = random_array(LAYOUT_SHAPES[layout], dtype)
    output = round_trip(array)
    assert output.dtype == array.dtype
    np.testing.assert_array_equal(output, array)


@pytest.mark.parametrize("layout", LAYOUT_SHAPES)
def test_float64_array_goes_through_float32(layout):
    array = random_array(LAYOUT_SHAPES[layout], np.float64)
    output = round_trip(array)
    assert output.dtype == np.float64
    assert output.shape == array.shape
    np.testing.assert_allclose(output, array, rtol=0, atol=1e-7)


@pytest.mark.parametrize("dtype, scale", [(np.uint8, 255), (np.uint16, 65535), (np.float32, 1)])
def test_array_pixels_are_float32_scaled_to_unit_range(dtype, scale):
    array = random_array((4, 5, 3), dtype)
    pixels = only_item(array).pixels
    assert pixels.dtype == torch.float32
    expected = torch.from_numpy(array.astype(np.float32).transpose(2, 0, 1)) / scale
    assert torch.equal(pixels, expected)


def test_array_alpha_is_reattached_unchanged():
    array = random_array((4, 5, 4), np.uint16)
    item = only_item(array)
    output = item.to_output(torch.ones_like(item.pixels))
    np.testing.assert_array_equal(output[..., 3], array[..., 3])
    assert (output[..., :3] == 65535).all()


def test_array_outputs_are_clipped():
    item = only_item(random_array((4, 5, 3), np.float32))
    output = item.to_output(item.pixels * 4 - 2)
    assert output.min() == 0 and output.max() == 1


def test_array_original_is_an_independent_copy():
    array = random_array((4, 5, 3), np.uint8)
    copy = only_item(array).original()
    np.testing.assert_array_equal(copy, array)
    copy[...] = 7
    assert not (array == 7).all()


def test_pixels_do_not_alias_float32_input():
    array = random_array((4, 5, 3), np.float32)
    before = array.copy()
    only_item(array).pixels.zero_()
    np.testing.assert_array_equal(array, before)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_array_batch_is_stacked_back(channels):
    batch = random_array((3, 4, 5, channels), np.uint8)
    source = ImageSource(batch)
    items = list(source)
    assert [item.name for item in items] == ["images[0]", "images[1]", "images[2]"]
    output = source.collect([item.to_output(item.pixels) for item in items])
    assert output.shape == batch.shape and output.dtype == batch.dtype
    np.testing.assert_array_equal(output, batch)
    originals = source.collect([item.original() for item in items])
    np.testing.assert_array_equal(originals, batch)


def test_empty_batch_collects_to_an_empty_batch():
    batch = np.zeros((0, 4, 5, 3), np.float32)
    source = ImageSource(batch)
    assert list(source) == []
    output = source.collect([])
    assert output.shape == batch.shape and output.dtype == batch.dtype


# torch tensors


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float16, torch.float32])
def test_tensor_round_trip_is_exact(channels, dtype):
    tensor = torch.from_numpy(random_array((channels, 5, 6), np.float32))
    tensor = (tensor * 255).round().to(torch.uint8) if dtype == torch.uint8 else tensor.to(dtype)
    output = round_trip(tensor)
    assert output.dtype == dtype and output.shape == tensor.shape
    assert torch.equal(output, tensor)


@pytest.mark.skipif(not hasattr(torch, "uint16"), reason="torch.uint16 needs torch >= 2.3")
def test_uint16_tensor_round_trip_is_exact():
    tensor = torch.from_numpy(random_array((3, 5, 6), np.uint16).astype(np.int32))
    tensor = tensor.to(torch.uint16)
    item = only_item(tensor)
    assert item.pixels.max().item() == 1.0
    output = item.to_output(item.pixels)
    assert output.dtype == torch.uint16
    assert torch.equal(output.to(torch.int32), tensor.to(torch.int32))


def test_float64_tensor_goes_through_float32():
    tensor = torch.from_numpy(random_array((3, 5, 6), np.float64))
    output = round_trip(tensor)
    assert output.dtype == torch.float64
    torch.testing.assert_close(output, tensor, rtol=0, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_tensor_batch_is_stacked_back(dtype):
    batch = torch.from_numpy(random_array((2, 3, 4, 5), np.float32))
    batch = (batch * 255).round().to(dtype) if dtype == torch.uint8 else batch
    source = ImageSource(batch)
    output = source.collect([item.to_output(item.pixels) for item in source])
    assert (output.shape, output.dtype, output.device) == (batch.shape, batch.dtype, batch.device)
    assert torch.equal(output, batch)


def test_tensor_alpha_is_reattached_and_original_is_a_copy():
    tensor = torch.rand(4, 3, 5)
    item = only_item(tensor)
    output = item.to_output(torch.zeros(3, 3, 5))
    assert torch.equal(output[3], tensor[3])
    assert not output[:3].any()
    copy = item.original()
    assert torch.equal(copy, tensor)
    copy.zero_()
    assert tensor.any()


def test_tensor_that_requires_grad_gives_plain_outputs():
    tensor = torch.rand(3, 4, 5, requires_grad=True)
    item = only_item(tensor)
    assert not item.pixels.requires_grad
    assert not item.to_output(item.pixels).requires_grad
    item.pixels.zero_()
    assert tensor.detach().any()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_stay_on_their_device():
    batch = torch.rand(2, 4, 5, 6, device="cuda")
    source = ImageSource(batch)
    items = list(source)
    assert all(item.pixels.device == batch.device for item in items)
    output = source.collect([item.to_output(item.pixels.cpu()) for item in items])
    assert output.device == batch.device
    assert torch.equal(output, batch)


# files and directories


def write_image(path: Path, array: np.ndarray, **save_options) -> Path:
    Image.fromarray(array).save(path, **save_options)
    return path


@pytest.mark.parametrize("as_str", [True, False])
def test_png_path_gives_a_pil_image_with_the_file_pixels(tmp_path, as_str):
    array = random_array((6, 8, 3), np.uint8)
    path = write_image(tmp_path / "photo.png", array)
    item = only_item(str(path) if as_str else path)
    assert item.name == f"images ({path})"
    output = item.to_output(item.pixels)
    assert isinstance(output, Image.Image) and output.mode == "RGB"
    np.testing.assert_array_equal(pil_pixels(output), array)
    np.testing.assert_array_equal(pil_pixels(item.original()), array)


def test_jpeg_path_round_trip_matches_the_decoded_file(tmp_path):
    path = write_image(tmp_path / "photo.jpg", random_array((16, 24, 3), np.uint8), quality=80)
    output = round_trip(path)
    with Image.open(path) as stored:
        np.testing.assert_array_equal(pil_pixels(output), pil_pixels(stored))


def test_sixteen_bit_png_is_read_on_a_16_bit_scale(tmp_path):
    array = random_array((5, 6), np.uint16)
    path = write_image(tmp_path / "deep.png", array)
    item = only_item(path)
    assert torch.equal(item.pixels[0], torch.from_numpy(array.astype(np.float32)) / 65535)
    np.testing.assert_array_equal(pil_pixels(item.to_output(item.pixels)), array)


# Photos: EXIF orientation, ICC profiles and EXIF data kept, one frame only


def sideways_jpeg(path: Path, array: np.ndarray, orientation: int = 6) -> Path:
    """A JPEG stored as `array`, whose EXIF says: turn it to view it (6: 90 degrees clockwise)."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    exif[ExifTags.Base.Make] = "latent-ot test camera"
    return write_image(path, array, exif=exif.tobytes(), quality=100, subsampling=0)


def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def test_exif_orientation_is_applied_as_viewers_do_and_reset_to_1(tmp_path):
    path = sideways_jpeg(tmp_path / "sideways.jpg", skimage.data.astronaut()[:64:2, :96:2])
    with Image.open(path) as stored:
        upright = ImageOps.exif_transpose(stored)  # PIL's reference
    item = only_item(path)
    assert item.pixels.shape == (3, 48, 32)  # stored 48 wide, 32 high: shown 32 x 48
    expected = torch.from_numpy(np.asarray(upright).transpose(2, 0, 1).astype(np.float32))
    torch.testing.assert_close(item.pixels, expected / 255, rtol=0, atol=0)
    output = item.to_output(item.pixels)
    assert output.size == (32, 48)
    assert output.getexif()[ExifTags.Base.Orientation] == 1
    assert output.getexif()[ExifTags.Base.Make] == "latent-ot test camera"
    assert item.original().size == (32, 48)


def test_exif_orientation_is_applied_to_a_pil_image_without_changing_it():
    image = Image.fromarray(random_array((4, 10, 3), np.uint8))
    exif = image.getexif()
    exif[ExifTags.Base.Orientation] = 3  # upside down
    image.info["exif"] = exif.tobytes()
    item = only_item(image)
    np.testing.assert_array_equal(
        np.asarray(item.to_output(item.pixels)), np.asarray(image)[::-1, ::-1]
    )
    assert image.getexif()[ExifTags.Base.Orientation] == 3  # the caller's image is untouched


def test_exif_orientation_can_be_declined(tmp_path):
    array = random_array((4, 10, 3), np.uint8)
    path = sideways_jpeg(tmp_path / "sideways.jpg", array)
    item = next(iter(ImageSource(path, exif_orientation=False)))
    assert item.pixels.shape == (3, 4, 10)
    output = item.to_output(item.pixels)
    assert output.size == (10, 4) and output.getexif()[ExifTags.Base.Orientation] == 6


def test_exif_orientation_must_be_a_bool():
    with pytest.raises(TypeError, match=r"^exif_orientation must be True or False, got 'no'$"):
        ImageSource(np.zeros((2, 2), np.uint8), exif_orientation="no")


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tif"])
def test_icc_profile_and_exif_are_kept_when_written(tmp_path, suffix):
    profile = srgb_profile()
    exif = Image.Exif()
    exif[ExifTags.Base.Artist] = "someone"
    path = write_image(
        tmp_path / f"photo{suffix}",
        skimage.data.coffee()[:40:4, :60:4],
        icc_profile=profile,
        exif=exif.tobytes(),
    )
    item = only_item(path)
    written = tmp_path / "out" / path.name
    written.parent.mkdir()
    latent_ot.images.save_image_atomically(item.to_output(1 - item.pixels), written)
    with Image.open(written) as image:
        assert image.info["icc_profile"] == profile
        if suffix != ".tif":  # PIL reads a TIFF's EXIF tags as its own, not as EXIF data
            assert image.getexif()[ExifTags.Base.Artist] == "someone"


def test_folder_run_keeps_the_profile_of_each_input(tmp_path):
    profile = srgb_profile()
    write_image(tmp_path / "a.png", skimage.data.chelsea()[:20, :30], icc_profile=profile)
    write_image(tmp_path / "b.png", skimage.data.chelsea()[:20, :30])

    def invert(path):
        item = only_item(path)
        return item.to_output(1 - item.pixels)

    report = latent_ot.images.transform_files(
        invert, [tmp_path / "a.png", tmp_path / "b.png"], tmp_path / "out"
    )
    assert report.ok
    with (
        Image.open(tmp_path / "out" / "a.png") as kept,
        Image.open(tmp_path / "out" / "b.png") as none,
    ):
        assert kept.info["icc_profile"] == profile and "icc_profile" not in none.info


def animated_gif(path: Path, frames: int = 3) -> Path:
    images = [Image.new("RGB", (8, 6), (60 * index, 20, 200)) for index in range(frames)]
    images[0].save(path, save_all=True, append_images=images[1:])
    return path


def test_animated_gif_is_refused_with_its_frame_count(tmp_path):
    path = animated_gif(tmp_path / "moving.gif")
    message = (
        f"images ({path}) has 3 frames (an animated or multi-page image); latent-ot transforms "
        "single images: save each frame as an image of its own first"
    )
    for prefetch in (0, 2):
        with pytest.raises(ImageReadError) as caught:
            list(ImageSource([path], prefetch=prefetch))
        assert str(caught.value) == message.replace("images (", "images[0] (")
    with pytest.raises(ImageReadError) as caught:
        only_item(path)
    assert str(caught.value) == message
    with Image.open(path) as opened, pytest.raises(ImageReadError, match=r"^images has 3 frames"):
        only_item(opened)


def test_multi_page_tiff_is_refused(tmp_path):
    path = tmp_path / "pages.tif"
    pages = [Image.new("L", (5, 5), value) for value in (0, 255)]
    pages[0].save(path, save_all=True, append_images=pages[1:])
    with pytest.raises(ImageReadError, match=r"has 2 frames \(an animated or multi-page image\)"):
        only_item(path)


def test_unreadable_files_can_be_reported_and_left_out(tmp_path):
    good = write_image(tmp_path / "good.png", random_array((4, 4, 3), np.uint8))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    moving = animated_gif(tmp_path / "moving.gif")
    for prefetch in (0, 2):
        skipped: list = []
        source = ImageSource(
            [broken, good, moving],
            prefetch=prefetch,
            on_unreadable=lambda path, err, into=skipped: into.append((path, type(err).__name__)),
        )
        assert [item.name for item in source] == [f"images[1] ({good})"]
        assert skipped == [(broken, "ImageReadError"), (moving, "ImageReadError")]


def test_an_image_source_is_read_with_its_own_options(tmp_path):
    path = sideways_jpeg(tmp_path / "sideways.jpg", random_array((4, 10, 3), np.uint8))
    inner = ImageSource(path, name="photos", exif_orientation=False)
    item = only_item(inner)
    assert item.name == f"photos ({path})" and item.pixels.shape == (3, 4, 10)


# 16-bit colour PNG files


def test_sixteen_bit_rgb_png_stays_16_bit(tmp_path):
    values = random_array((6, 7, 3), np.uint16)
    path = tmp_path / "deep.png"
    path.write_bytes(png16_bytes(values, icc_profile=srgb_profile()))
    # PIL, an independent reader, reads the high bytes of the values written.
    with Image.open(path) as eight_bit:
        assert eight_bit.mode == "RGB" and eight_bit.info["icc_profile"] == srgb_profile()
        np.testing.assert_array_equal(np.asarray(eight_bit), values >> 8)
    item = only_item(path)
    torch.testing.assert_close(
        item.pixels, torch.from_numpy(values.transpose(2, 0, 1).astype(np.float32)) / 65535
    )
    output = item.to_output(item.pixels)
    assert output.dtype == np.uint16
    np.testing.assert_array_equal(output, values)


def test_sixteen_bit_rgba_png_round_trips_through_a_folder_run(tmp_path):
    values = random_array((5, 9, 4), np.uint16)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "deep.png").write_bytes(png16_bytes(values, icc_profile=srgb_profile()))

    def invert(path):
        item = only_item(path)
        return item.to_output(1 - item.pixels)

    report = latent_ot.images.transform_files(invert, tmp_path / "in", tmp_path / "out")
    assert report.ok
    written = tmp_path / "out" / "deep.png"
    expected = np.concatenate([65535 - values[..., :3], values[..., 3:]], axis=-1)
    np.testing.assert_array_equal(only_item(written).to_output(only_item(written).pixels), expected)
    with Image.open(written) as eight_bit:  # PIL's own decoder accepts the file
        assert eight_bit.info["icc_profile"] == srgb_profile()
        np.testing.assert_array_equal(np.asarray(eight_bit), expected >> 8)


def test_an_array_is_written_only_as_a_16_bit_png(tmp_path):
    with pytest.raises(ValueError, match=r"an array is written only as a 16-bit colour PNG"):
        latent_ot.images.save_image_atomically(np.zeros((2, 2, 3), np.uint16), tmp_path / "a.jpg")


# Files written as a plain write would write them


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_outputs_get_the_permissions_the_umask_gives(tmp_path, umask):
    previous = os.umask(umask)
    try:
        latent_ot.images.save_image_atomically(Image.new("L", (2, 2)), tmp_path / "a.png")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a.png").stat().st_mode) == 0o666 & ~umask


def test_a_folder_run_removes_the_temporaries_a_killed_run_left(tmp_path):
    write_image(tmp_path / "a.png", random_array((4, 4, 3), np.uint8))
    out = tmp_path / "out"
    out.mkdir()
    stale = [out / ".a.png.latent-ot-0123456789abcdef.tmp", out / ".a.png.k2j4_x9q.tmp"]
    foreign = [out / ".b.png.latent-ot-0123456789abcdef.tmp", out / ".a.png.backup.tmp"]
    for path in stale + foreign:
        path.write_bytes(b"partial")
    report = latent_ot.images.transform_files(
        lambda p: Image.open(p).copy(), [tmp_path / "a.png"], out
    )
    assert report.ok
    assert sorted(p.name for p in out.iterdir()) == sorted(["a.png"] + [p.name for p in foreign])


def test_directory_gives_its_image_files_sorted_by_name(tmp_path):
    write_image(tmp_path / "b.png", random_array((4, 4, 3), np.uint8))
    write_image(tmp_path / "a.JPG", random_array((5, 6, 3), np.uint8))
    write_image(tmp_path / ".hidden.png", random_array((4, 4, 3), np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "folder.png").mkdir()
    source = ImageSource(tmp_path)
    items = list(source)
    assert [item.name for item in items] == [
        f"images[0] ({tmp_path / 'a.JPG'})",
        f"images[1] ({tmp_path / 'b.png'})",
    ]
    outputs = source.collect([item.to_output(item.pixels) for item in items])
    assert isinstance(outputs, list)
    assert [output.size for output in outputs] == [(6, 5), (4, 4)]


def test_folders_and_sources_take_the_same_files_from_a_directory(tmp_path):
    for name in ("b.png", "a.JPG", "c.Tiff", ".hidden.png", "._c.png"):
        write_image(tmp_path / name, random_array((4, 4, 3), np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "folder.png").mkdir()
    expected = [tmp_path / "a.JPG", tmp_path / "b.png", tmp_path / "c.Tiff"]
    assert expand_inputs(tmp_path) == expected
    names = [item.name for item in ImageSource(tmp_path)]
    assert names == [f"images[{index}] ({path})" for index, path in enumerate(expected)]


def test_real_photos_round_trip_exactly(photo_dir, tmp_path):
    # RGB photographs and a grayscale one (mode L), as PNG files.
    import skimage.data

    grey = tmp_path / "camera.png"
    Image.fromarray(skimage.data.camera()).save(grey)
    paths = [grey, *sorted(photo_dir.glob("*.png"))]
    outputs = round_trip(paths)
    for path, output in zip(paths, outputs, strict=True):
        with Image.open(path) as stored:
            assert output.mode == stored.mode
            np.testing.assert_array_equal(pil_pixels(output), pil_pixels(stored))


# containers


def test_list_of_mixed_kinds_and_sizes_gives_each_kind_back(tmp_path):
    path = write_image(tmp_path / "x.png", random_array((7, 3, 3), np.uint8))
    images = [
        make_pil("L"),
        random_array((2, 9, 4), np.uint16),
        torch.rand(1, 5, 5, dtype=torch.float64),
        path,
    ]
    source = ImageSource(images)
    items = list(source)
    assert [tuple(item.pixels.shape) for item in items] == [
        (3, 6, 9),
        (3, 2, 9),
        (3, 5, 5),
        (3, 7, 3),
    ]
    assert [item.name for item in items][:3] == ["images[0]", "images[1]", "images[2]"]
    assert items[3].name == f"images[3] ({path})"
    outputs = source.collect([item.to_output(item.pixels) for item in items])
    assert [type(output) for output in outputs] == [
        Image.Image,
        np.ndarray,
        torch.Tensor,
        Image.Image,
    ]


def test_tuple_collects_to_a_list():
    images = (random_array((3, 3), np.uint8), random_array((4, 4), np.uint8))
    assert isinstance(round_trip(images), list)


def test_single_image_collects_to_a_single_image():
    array = random_array((3, 4, 3), np.uint8)
    source = ImageSource(array)
    assert isinstance(source.collect([only_item(array).original()]), np.ndarray)
    with pytest.raises(ValueError, match="images holds 1 image"):
        source.collect([array, array])


def test_generator_is_read_lazily_and_only_once():
    decoded = []

    def images():
        for size in (3, 4, 5):
            decoded.append(size)
            yield random_array((size, size), np.uint8)

    source = ImageSource(images())
    assert decoded == []
    iterator = iter(source)
    next(iterator)
    assert decoded == [3]
    items = [*iterator]
    assert [item.name for item in items] == ["images[1]", "images[2]"]
    with pytest.raises(ValueError, match="images is a one-shot iterator"):
        list(source)


def test_empty_list_is_not_an_error():
    source = ImageSource([])
    assert list(source) == []
    assert source.collect([]) == []


# pad_to_multiple and crop_to


@pytest.mark.parametrize("height, width", [(8, 8), (9, 15), (13, 8), (17, 23)])
def test_pad_then_crop_returns_the_original(height, width):
    batch = torch.rand(2, 3, height, width)
    padded = pad_to_multiple(batch, 8)
    assert padded.shape[-2] % 8 == 0 and padded.shape[-1] % 8 == 0
    assert padded.shape[-2] - height < 8 and padded.shape[-1] - width < 8
    assert torch.equal(crop_to(padded, height, width), batch)


def test_padding_reflects_the_bottom_and_right_edges():
    batch = torch.rand(1, 2, 9, 13)
    padded = pad_to_multiple(batch, 4)
    expected = np.pad(batch.numpy(), ((0, 0), (0, 0), (0, 3), (0, 3)), mode="reflect")
    np.testing.assert_array_equal(padded.numpy(), expected)
    assert torch.equal(padded[0, 0, 9, :13], batch[0, 0, 7])  # row 9 mirrors row 7 across row 8


def test_no_padding_needed_returns_the_batch_itself():
    batch = torch.rand(1, 3, 16, 8)
    assert pad_to_multiple(batch, 8) is batch


def test_too_small_to_pad_names_the_size_and_factor():
    with pytest.raises(ValueError, match=r"restored\[2\] is 5 x 40 px; .* at least 8 x 8"):
        pad_to_multiple(torch.rand(1, 3, 5, 40), 8, name="restored[2]")


def test_crop_larger_than_the_batch_is_refused():
    with pytest.raises(ValueError, match="cannot crop a batch of 4 x 4 px to 5 x 4 px"):
        crop_to(torch.rand(1, 3, 4, 4), 5, 4)


# errors

FIVE_CHANNELS = r"has 5 channels; expected 1, 3 or 4 \(channels last for numpy, first for tensors\)"


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.array([[0.5, np.nan]], np.float32), "contains NaN"),
        (torch.tensor([[[0.5, float("inf")]]]), "contains infinite values"),
        (np.array([[-0.5, 1.5]]), r"has float values in \[-0.5, 1.5\]; expected \[0, 1\]"),
        (torch.full((3, 2, 2), 255.0), r"has float values in \[255, 255\]"),
    ],
)
def test_float_values_outside_the_unit_range_are_named(bad, message):
    with pytest.raises(ValueError, match=r"images\[1\] " + message):
        list(ImageSource([np.zeros((2, 2)), bad]))


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros(6), r"is a 1-D array of shape \(6,\); expected H x W or H x W x C"),
        (np.zeros((2, 3, 4, 3)), "is a 4-D array .* only as the whole argument"),
        (torch.zeros(4, 5), r"is a 2-D tensor .* \(use tensor\[None\]"),
        (np.zeros((4, 4, 5)), FIVE_CHANNELS),
        (torch.zeros(5, 4, 4), FIVE_CHANNELS),
        (np.zeros((3, 8, 8)), r"has 8 channels; .* use array\.transpose\(1, 2, 0\)"),
        (torch.zeros(8, 8, 3), r"has 8 channels; .* use tensor\.permute\(2, 0, 1\)"),
        (np.zeros((0, 5), np.uint8), r"is empty \(shape \(0, 5\)\)"),
        (torch.zeros(3, 4, 0), r"is empty \(shape \(3, 4, 0\)\)"),
        (Image.new("RGB", (0, 5)), r"is empty \(0 x 5 px\)"),
    ],
)
def test_wrong_shapes_are_named(bad, message):
    with pytest.raises(ValueError, match=r"images\[1\] " + message):
        list(ImageSource([np.zeros((2, 2)), bad]))


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros(3), "is a 1-D array"),
        (np.zeros((2, 3, 4, 4, 3)), "is a 5-D array"),
        (np.zeros((2, 4, 4, 2)), "has 2 channels"),
        (torch.zeros(2, 2, 4, 4), "has 2 channels"),
        (np.zeros((2, 0, 4, 3)), "is empty"),
    ],
)
def test_wrong_whole_argument_shapes_fail_at_construction(bad, message):
    with pytest.raises(ValueError, match="^restored " + message):
        ImageSource(bad, name="restored")


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((2, 2), bool),
        np.zeros((2, 2), np.int64),
        torch.zeros(3, 2, 2, dtype=torch.int32),
        torch.zeros(3, 2, 2, dtype=torch.bool),
    ],
)
def test_unsupported_dtypes_are_type_errors(bad):
    with pytest.raises(TypeError, match=r"^images has dtype .*; expected uint8, uint16, float16"):
        ImageSource(bad)
    with pytest.raises(TypeError, match=r"^images\[0\] has dtype"):
        list(ImageSource([bad]))


@pytest.mark.parametrize("bad", [42, b"\x89PNG", {"a": np.zeros((2, 2))}, None])
def test_unsupported_arguments_are_type_errors(bad):
    with pytest.raises(TypeError, match=r"^natural is of type \w+; expected a PIL image"):
        ImageSource(bad, name="natural")


def test_unsupported_elements_are_type_errors():
    with pytest.raises(TypeError, match=r"^images\[1\] is of type float; expected a PIL image"):
        list(ImageSource([np.zeros((2, 2)), 3.5]))


def test_missing_file_is_named(tmp_path):
    missing = tmp_path / "missing.png"
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        ImageSource(missing)
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        list(ImageSource([missing]))


def test_file_that_is_not_an_image_names_the_path_and_the_reason(tmp_path):
    path = tmp_path / "fake.png"
    path.write_text("just text")
    with pytest.raises(
        ImageReadError, match=r"images \(.*fake\.png\) could not be read .*cannot identify"
    ) as info:
        list(ImageSource(path))
    assert info.value.__cause__ is not None


def test_directory_inside_a_list_is_refused(tmp_path):
    with pytest.raises(ImageReadError, match="is a directory"):
        list(ImageSource([tmp_path]))


def test_directory_without_images_is_named(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=f"{tmp_path.name} contains no image files"):
        ImageSource(tmp_path)


@pytest.mark.parametrize("pixel_count", [150, 400])  # PIL warns above the limit, fails above 2x
def test_decompression_bombs_are_refused_with_the_limit_named(tmp_path, monkeypatch, pixel_count):
    side = int(pixel_count**0.5)
    path = write_image(tmp_path / "bomb.png", np.zeros((side, side), np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageReadError, match=r"bomb\.png\) has more pixels than"):
        list(ImageSource(path))


def test_unsupported_pil_mode_is_named():
    with pytest.raises(ImageReadError, match=r"images is a PIL image in mode 'HSV'"):
        list(ImageSource(Image.new("HSV", (2, 2))))


def test_32_bit_pil_image_outside_16_bits_is_named():
    image = Image.fromarray(np.array([[0, 70000]], np.int32))
    with pytest.raises(ValueError, match=r"images .*values in \[0, 70000\]; expected 16-bit"):
        list(ImageSource(image))


def test_output_pixels_of_another_size_or_with_nan_are_refused():
    item = only_item(np.zeros((4, 5, 4), np.uint8))
    with pytest.raises(ValueError, match=r"images: output pixels are 4 x 6 px .* 4 x 5 px"):
        item.to_output(torch.zeros(3, 4, 6))
    with pytest.raises(ValueError, match="images: output pixels contain NaN"):
        item.to_output(torch.full((3, 4, 5), float("nan")))
    with pytest.raises(TypeError, match=r"must be a float torch tensor; got dtype torch\.uint8"):
        item.to_output(torch.zeros(3, 4, 5, dtype=torch.uint8))


# properties

NUMPY_DTYPES = [np.uint8, np.uint16, np.float16, np.float32, np.float64]
TENSOR_DTYPES = [torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64]


@settings(max_examples=60, deadline=None)
@given(
    dtype=st.sampled_from(NUMPY_DTYPES),
    channels=st.sampled_from([None, 1, 3, 4]),
    batch=st.sampled_from([None, 1, 3]),
    height=st.integers(1, 9),
    width=st.integers(1, 9),
    seed=st.integers(0, 2**16),
)
def test_any_array_round_trips(dtype, channels, batch, height, width, seed):
    if batch is not None and channels is None:
        channels = 3  # batches are N x H x W x C
    shape = (height, width) if channels is None else (height, width, channels)
    array = random_array(shape if batch is None else (batch, *shape), dtype, seed)
    output = round_trip(array)
    assert output.shape == array.shape and output.dtype == array.dtype
    tolerance = 1e-7 if dtype == np.float64 else 0
    np.testing.assert_allclose(output.astype(np.float64), array, rtol=0, atol=tolerance)


@settings(max_examples=60, deadline=None)
@given(
    dtype=st.sampled_from(TENSOR_DTYPES),
    channels=st.sampled_from([1, 3, 4]),
    batch=st.sampled_from([None, 2]),
    height=st.integers(1, 9),
    width=st.integers(1, 9),
    seed=st.integers(0, 2**16),
)
def test_any_tensor_round_trips(dtype, channels, batch, height, width, seed):
    shape = (channels, height, width) if batch is None else (batch, channels, height, width)
    values = torch.from_numpy(random_array(shape, np.float64, seed))
    tensor = (values * 255).round().to(dtype) if dtype == torch.uint8 else values.to(dtype)
    output = round_trip(tensor)
    assert (output.shape, output.dtype) == (tensor.shape, tensor.dtype)
    tolerance = 1e-7 if dtype == torch.float64 else 0
    torch.testing.assert_close(output, tensor, rtol=0, atol=tolerance)


@settings(max_examples=40, deadline=None)
@given(height=st.integers(4, 20), width=st.integers(4, 20), factor=st.sampled_from([1, 2, 4]))
def test_pad_then_crop_is_the_identity(height, width, factor):
    batch = torch.rand(1, 2, height, width)
    padded = pad_to_multiple(batch, factor)
    assert padded.shape[-2] % factor == 0 and padded.shape[-1] % factor == 0
    assert torch.equal(crop_to(padded, height, width), batch)


# the images package exports its readers and its folder runs

IMAGE_NAMES = ("IMAGE_EXTENSIONS", "ImageItem", "ImageSource")
FOLDER_NAMES = (
    "FolderReport",
    "expand_inputs",
    "save_image_atomically",
    "shard",
    "transform_files",
)


@pytest.mark.parametrize("name", FOLDER_NAMES)
def test_images_reexports_the_images_folders(name):
    assert getattr(latent_ot.images, name) is getattr(latent_ot.images.folders, name)


def test_images_exports_exactly_those_names():
    assert sorted(latent_ot.images.__all__) == sorted(IMAGE_NAMES + FOLDER_NAMES)
