"""Reading dermoscopy images defensively, finding them in folders, and writing image outputs atomically.

A clinic's folder holds whatever cameras, phones and scripts put there. Before anything is decoded, a file must be
a regular file (not a FIFO or a device) of bounded size whose header names a known format and a bounded number of
pixels: a 100 KB PNG declaring 30000x30000 is refused in milliseconds instead of costing gigabytes. JPEGs are
decoded strictly (libjpeg-turbo through simplejpeg, whose warnings about corrupt data are errors: OpenCV would
return a half-grey picture), other formats by OpenCV. Every failure becomes an :class:`ImageReadError` whose
message says which file, what is wrong and what to do, so a folder run records it and carries on.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Sequence

import cv2
import imagesize
import numpy as np
import simplejpeg

from .errors import UserError
from .files import write_atomic, write_bytes_atomic

# PNG without row filters where OpenCV offers the choice (4.12 on; older versions write their default, the same
# pixels): for a 0/255 mask the filters only cost time (36 % of the encoding) and bytes (1.7x).
_PNG_NO_FILTERS = [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE] if hasattr(cv2, "IMWRITE_PNG_FILTER") else []
_HEADER_BYTES = 1 << 16  # enough for the size fields of nearly every image file (a JPEG's after its EXIF)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
_MAGIC = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG", b"BM": "BMP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}


@dataclass(frozen=True)
class ImageLimits:
    """What the reader accepts. 100 MP covers dermatoscope, DSLR and phone cameras (a 48 MP phone photo is
    8000x6000); decoding one costs up to 300 MB and preprocessing streams it, so two decoding workers stay below a
    gigabyte."""

    max_megapixels: float = 100.0
    max_file_mb: float = 100.0

    @property
    def max_pixels(self) -> int:
        return int(self.max_megapixels * 1e6)

    @property
    def max_bytes(self) -> int:
        return int(self.max_file_mb * 1e6)


DEFAULT_LIMITS = ImageLimits()


class ImageReadError(UserError, ValueError):
    """An input image could not be used; the message is meant for the person running the tool."""

    def __init__(self, path: Path | str, problem: str, hint: str) -> None:
        super().__init__(f"{path}: {problem} — {hint}")
        self.path, self.problem, self.hint = str(path), problem, hint

    def __reduce__(self):  # raised in worker processes: rebuilt from its parts in the parent
        return type(self), (self.path, self.problem, self.hint)


def _open_regular_file(path: Path) -> BinaryIO:
    """``path`` opened for reading if it is a regular file (checked on the open descriptor, opened without blocking:
    a file swapped for a FIFO after a check cannot hang the run); else the one-line ``ImageReadError``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ImageReadError(path, "file not found", "check the path") from None
    except PermissionError:
        raise ImageReadError(path, "permission denied", "make the file readable (chmod +r) or run as its owner") from None
    except OSError as e:
        raise ImageReadError(path, f"cannot be opened ({e.strerror})", "check the file and the disk") from None
    f = os.fdopen(fd, "rb")
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        f.close()
        if stat.S_ISDIR(mode):
            raise ImageReadError(path, "is a directory, not an image", "pass image files or a folder of them")
        raise ImageReadError(path, "is not a regular file (a FIFO, device or socket)", "pass image files only")
    return f


def _read_regular_file(path: Path, limits: ImageLimits) -> bytes:
    """The bytes of ``path`` if it is a regular file within the size limit."""
    with _open_regular_file(path) as f:
        try:
            data = f.read(limits.max_bytes + 1)
        except OSError as e:
            raise ImageReadError(path, f"cannot be read ({e.strerror})", "check the file and the disk") from None
    if not data:
        raise ImageReadError(path, "file is empty (0 bytes)", "re-export or re-copy the image")
    if len(data) > limits.max_bytes:
        raise ImageReadError(path, f"is larger than {limits.max_file_mb:g} MB", "downscale it, or raise --max-file-mb")
    return data


def _orient(rgb: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8), so the pixels are as a viewer displays them (what OpenCV does)."""
    t = rgb.transpose(1, 0, 2)
    oriented = {2: rgb[:, ::-1], 3: rgb[::-1, ::-1], 4: rgb[::-1], 5: t, 6: t[:, ::-1], 7: t[::-1, ::-1], 8: t[::-1]}
    return np.ascontiguousarray(oriented.get(orientation, rgb))


def _decode_jpeg(data: bytes, path: Path, orientation: int) -> np.ndarray:
    try:
        rgb = simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)
    except ValueError as e:
        if "color conversion" not in str(e).lower():
            raise ImageReadError(path, f"JPEG is truncated or corrupt ({e})", "re-export or re-copy the image") from None
        return _decode_other(data, path)  # CMYK/YCCK scans: OpenCV converts them (and orients them itself)
    return _orient(rgb, orientation)


def _decode_other(data: bytes, path: Path) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ImageReadError(path, "is corrupt or truncated (the decoder refused it)", "re-export or re-copy the image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_image(path: Path | str, limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB, the way it is displayed.

    Grayscale, paletted and RGBA images become RGB (alpha dropped); 16-bit images are scaled to 8 bits; the
    EXIF orientation is applied, so the mask lines up with the image as a viewer shows it. Bytes after a JPEG's
    end marker (some phones write them) are fine; corrupt or truncated data is not.
    """
    path = Path(path)
    data = _read_regular_file(path, limits)
    kind = next((name for magic, name in _MAGIC.items() if data.startswith(magic)), None)
    if kind is None:
        raise ImageReadError(path, f"not a JPEG, PNG, BMP or TIFF image (it starts with {data[:8]!r})", "pass dermoscopy images")
    info = imagesize.get_info(io.BytesIO(data), exif_rotation=False, dpi=False, colors=False, channels=False)
    if info.width <= 0 or info.height <= 0:
        raise ImageReadError(path, f"{kind} header is unreadable (corrupt or truncated)", "re-export or re-copy the image")
    if info.width * info.height > limits.max_pixels:
        raise ImageReadError(
            path, f"declares {info.width}x{info.height} pixels ({info.width * info.height / 1e6:.0f} MP), above the "
            f"limit of {limits.max_megapixels:g} MP", "downscale it, or raise --max-megapixels if memory allows",
        )  # fmt: skip
    rgb = _decode_jpeg(data, path, info.rotation) if kind == "JPEG" else _decode_other(data, path)
    if sorted(rgb.shape[:2]) != sorted((info.height, info.width)):
        raise ImageReadError(path, f"decodes to {rgb.shape[1]}x{rgb.shape[0]}, not the {info.width}x{info.height} its header declares", "re-export the image")
    return rgb


def image_size(path: Path | str) -> tuple[int, int]:
    """(height, width) as the file's header declares it, from its first 64 KB, without decoding; (-1, -1) when that
    does not tell (the decoder reports a bad file later). Opened as the decoder opens it: a FIFO or device named like
    an image is never read (it would block)."""
    try:
        with _open_regular_file(Path(path)) as f:
            width, height = imagesize.get(io.BytesIO(f.read(_HEADER_BYTES)))
    except (ImageReadError, OSError, ValueError):
        return -1, -1
    return height, width


def find_images(inputs: Sequence[Path], exclude: Path | None = None) -> list[Path]:
    """Expand files and folders into a de-duplicated list of candidate image files (each folder's sorted by path,
    in the order the inputs were given).

    Folders are searched recursively, following symbolic links to folders (each real folder once, so a link loop
    ends); inside them only known image suffixes are taken, and nothing under ``exclude`` (a run's output folder,
    so outputs never become inputs). Files given explicitly are kept whatever their suffix, so a bad one is
    reported, not silently skipped.
    """
    excluded = os.path.realpath(exclude) if exclude is not None else None
    found: dict[Path, None] = {}
    for item in inputs:
        if not item.is_dir():
            found[item] = None
            continue
        seen: set[tuple[int, int]] = set()
        in_folder: list[str] = []
        for root, dirs, files in os.walk(item, followlinks=True):
            st = os.stat(root)
            if (st.st_dev, st.st_ino) in seen or (excluded is not None and is_within(os.path.realpath(root), excluded)):
                dirs[:] = []  # a link back to a folder already searched, or the output folder
                continue
            seen.add((st.st_dev, st.st_ino))
            # Strings, not Paths, until sorted: a folder of 10,000s of images is listed in a fraction of the time.
            in_folder += [os.path.join(root, name) for name in files if os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES]
        # Sorted by path components, as Paths sort ("a/b.jpg" before "a-c.jpg"). One walk never yields a path twice
        # (each real folder once): only several inputs need the de-duplication, which hashes each Path (half the
        # listing's time for one large folder).
        in_order = [Path(p) for p in sorted(in_folder, key=lambda p: p.split(os.sep))]
        if len(inputs) == 1:
            return in_order
        found.update(dict.fromkeys(in_order))
    return list(found)


def is_within(real_path: str, real_folder: str) -> bool:
    """Whether ``real_path`` is ``real_folder`` or lies under it (both already resolved by ``os.path.realpath``)."""
    return real_path == real_folder or real_path.startswith(real_folder.rstrip(os.sep) + os.sep)


def write_image(path: Path, image: np.ndarray, sync_folder: bool = True) -> str:
    """Write ``image`` (BGR or grayscale uint8) in the format its suffix names (.png, .jpg), completely or not at all:
    encoded in memory first, so a full disk is an error here instead of an empty file OpenCV reports as written.
    Returns the sha256 of the bytes written (the file need not be read back to record it)."""
    ok, encoded = cv2.imencode(path.suffix, image, _PNG_NO_FILTERS if path.suffix.lower() == ".png" else [])
    if not ok:
        raise ValueError(f"OpenCV cannot encode an image as {path.suffix}")
    data = encoded.tobytes()
    write_bytes_atomic(path, data, sync_folder)
    return hashlib.sha256(data).hexdigest()


def write_npy(path: Path, array: np.ndarray, sync_folder: bool = True) -> None:
    def _write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    write_atomic(path, _write, sync_folder)
