"""Checks of the files a command reads and writes, made before any work starts."""

from __future__ import annotations

from pathlib import Path

__all__ = ["check_distinct_names", "check_output_file", "matching_references"]


def check_output_file(path: Path) -> None:
    """Refuse a directory as an output file; create the file's parent directory."""
    if path.is_dir():
        raise IsADirectoryError(f"output {path} is a directory; give a file name")
    path.parent.mkdir(parents=True, exist_ok=True)


def check_distinct_names(paths: list[Path]) -> None:
    """Refuse inputs whose outputs, named as they are, would collide."""
    seen: dict[str, Path] = {}
    for path in paths:
        if path.name in seen:
            raise ValueError(
                f"{seen[path.name]} and {path} have the same name: their outputs would collide"
            )
        seen[path.name] = path


def matching_references(images: list[Path], references: list[Path]) -> list[Path]:
    """The reference of each image: the one with its file name without extension.

    Examples
    --------
    >>> from pathlib import Path
    >>> found = matching_references([Path("out/b.png")], [Path("a.png"), Path("ref/b.jpg")])
    >>> [path.name for path in found]
    ['b.jpg']
    """
    by_stem: dict[str, list[Path]] = {}
    for reference in references:
        by_stem.setdefault(reference.stem, []).append(reference)
    missing = [image.name for image in images if image.stem not in by_stem]
    if missing:
        shown = ", ".join(missing[:3]) + (
            f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        )
        raise ValueError(
            f"no reference image for {shown}: references are matched to images by file name "
            "without extension"
        )
    for image in images:
        if len(by_stem[image.stem]) > 1:
            found = ", ".join(str(path) for path in by_stem[image.stem])
            raise ValueError(f"several references could be {image.name}'s: {found}")
    return [by_stem[image.stem][0] for image in images]
