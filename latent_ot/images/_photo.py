"""What makes a photo a photo: which way is up, its colour profile, its EXIF data, one frame.

Cameras store a photo as the sensor saw it and record in its EXIF ``Orientation`` tag how to
turn it upright, which browsers and viewers do: reading applies it (:func:`upright`), as they
would show it, and resets the tag to 1 so that the written result is not turned twice. The
ICC profile says what colours the pixel values stand for (a wide-gamut photo looks dull read
as sRGB): results keep their input's profile and EXIF data (:func:`carry_metadata`), and
writing stores them where the format holds them (:func:`metadata_save_options`). PIL reads
the EXIF tags of a TIFF file as TIFF tags, not as EXIF data: a TIFF keeps its profile only. An
animated or multi-page file is several images: reading one of its frames would silently cut
the others, so it is refused (:func:`check_single_frame`).
"""

from __future__ import annotations

from typing import Any

from PIL import ExifTags, Image, ImageOps

from ..exceptions import ImageReadError

__all__ = ["carry_metadata", "check_single_frame", "metadata_save_options", "upright"]

ORIENTATION = ExifTags.Base.Orientation
_METADATA_KEYS = ("icc_profile", "exif")
# PIL formats whose writers store an ICC profile and EXIF data given to ``Image.save``.
_METADATA_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "TIFF"})
# A camera's MPO file holds the photo and previews of it (or a depth map): its first image
# is the photo, as every viewer shows it.
_FIRST_FRAME_FORMATS = frozenset({"MPO"})


def check_single_frame(image: Image.Image, name: str) -> None:
    """Refuse an animated or multi-page image, naming it and its number of frames.

    Examples
    --------
    >>> from PIL import Image
    >>> check_single_frame(Image.new("RGB", (2, 2)), "images")
    """
    frames = getattr(image, "n_frames", 1)
    if frames > 1 and image.format not in _FIRST_FRAME_FORMATS:
        raise ImageReadError(
            f"{name} has {frames} frames (an animated or multi-page image); latent-ot "
            "transforms single images: save each frame as an image of its own first"
        )


def upright(image: Image.Image) -> Image.Image:
    """``image`` turned as its EXIF orientation says, the tag then set to 1 (upright).

    An image without the tag, or with the tag at 1, comes back as it is (not a copy).

    Examples
    --------
    >>> from PIL import Image
    >>> sideways = Image.new("RGB", (4, 2))
    >>> exif = sideways.getexif()
    >>> exif[ORIENTATION] = 6  # turn 90 degrees clockwise to view
    >>> sideways.info["exif"] = exif.tobytes()
    >>> turned = upright(sideways)
    >>> turned.size, turned.getexif()[ORIENTATION]
    ((2, 4), 1)
    """
    orientation = image.getexif().get(ORIENTATION, 1)
    if orientation not in range(2, 9):  # 1, or a value no viewer would apply
        return image
    turned = ImageOps.exif_transpose(image)
    exif = turned.getexif()
    exif[ORIENTATION] = 1
    turned.info["exif"] = exif.tobytes()
    return turned


def carry_metadata(result: Image.Image, template: Image.Image) -> Image.Image:
    """``result`` with the ICC profile and EXIF data of ``template`` (in ``result.info``)."""
    for key in _METADATA_KEYS:
        value = template.info.get(key)
        if value:
            result.info[key] = value
    return result


def metadata_save_options(image: Image.Image, image_format: str) -> dict[str, Any]:
    """``icc_profile`` and ``exif`` options of ``Image.save`` that keep ``image``'s own.

    Examples
    --------
    >>> from PIL import Image
    >>> image = Image.new("RGB", (2, 2))
    >>> image.info["icc_profile"] = b"profile"
    >>> metadata_save_options(image, "PNG"), metadata_save_options(image, "BMP")
    ({'icc_profile': b'profile'}, {})
    """
    if image_format not in _METADATA_FORMATS:
        return {}
    return {key: image.info[key] for key in _METADATA_KEYS if image.info.get(key)}
