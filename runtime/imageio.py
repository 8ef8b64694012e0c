"""Reading dermoscopy images robustly, and writing image outputs atomically (see ``files``).

Every failure becomes an :class:`ImageReadError` whose message says which file, what is wrong and what to do,
so a folder run can record it and carry on with the other images.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .files import write_atomic

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
# OpenCV refuses images above 2^30 pixels by default; we stop well before memory becomes the problem.
MAX_PIXELS = 100_000_000


class ImageReadError(ValueError):
    """An input image could not be used; the message is meant for the person running the tool."""

    def __init__(self, path: Path | str, problem: str, hint: str) -> None:
        super().__init__(f"{path}: {problem} — {hint}")
        self.path, self.problem, self.hint = str(path), problem, hint


def read_image(path: Path | str) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB, the way it is displayed.

    Grayscale, paletted and RGBA images become RGB (alpha dropped); 16-bit images are scaled to 8 bits; the
    EXIF orientation of JPEGs is applied, so the mask lines up with the image as a viewer shows it.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageReadError(path, "file not found", "check the path") from None
    except PermissionError:
        raise ImageReadError(path, "permission denied", "make the file readable (chmod +r) or run as its owner") from None
    except IsADirectoryError:
        raise ImageReadError(path, "is a directory, not an image", "pass image files or a folder of them") from None
    except OSError as e:
        raise ImageReadError(path, f"cannot be read ({e.strerror})", "check the file and the disk") from None
    if not data:
        raise ImageReadError(path, "file is empty (0 bytes)", "re-export or re-copy the image")
    buf = np.frombuffer(data, dtype=np.uint8)
    if data[:2] == b"\xff\xd8" and data.rstrip(b"\x00")[-2:] != b"\xff\xd9":
        # libjpeg decodes a truncated JPEG into a half-grey picture with only a warning; refuse it.
        raise ImageReadError(path, "JPEG is truncated or corrupt (no end-of-image marker)", "re-export or re-copy the image")
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None:
        raise ImageReadError(
            path, "not a readable image (corrupt, or a format OpenCV cannot decode)", f"use one of {', '.join(IMAGE_SUFFIXES)}"
        )
    if img.shape[0] * img.shape[1] > MAX_PIXELS:
        raise ImageReadError(path, f"image is {img.shape[1]}x{img.shape[0]}, over {MAX_PIXELS:,} pixels", "downscale it first")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def find_images(inputs: list[Path]) -> list[Path]:
    """Expand files and folders (recursively) into a sorted, de-duplicated list of candidate image files.

    Files given explicitly are kept whatever their suffix (so a bad one is reported, not silently skipped);
    inside folders only known image suffixes are taken.
    """
    found: dict[Path, None] = {}
    for item in inputs:
        if item.is_dir():
            for p in sorted(item.rglob("*")):
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
                    found[p] = None
        else:
            found[item] = None
    return list(found)


def write_image(path: Path, image: np.ndarray) -> None:
    """Write ``image`` (BGR or grayscale uint8) in the format its suffix names (.png, .jpg), atomically."""

    def _write(tmp: Path) -> None:
        if not cv2.imwrite(str(tmp), image):
            raise OSError(f"OpenCV could not write {tmp}")

    write_atomic(path, _write)


def write_npy(path: Path, array: np.ndarray) -> None:
    def _write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    write_atomic(path, _write)
