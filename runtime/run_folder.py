"""A prediction run's output folder: one writer at a time, the settings its masks were made with, and a journal of
what is done, so that runs can be interrupted, repeated and resumed without losing or mixing up a result.

- ``.ultralbm.lock``: held (``filelock``, an OS lock released even by kill -9) while a run writes; a second run on
  the same folder is refused at once.
- ``manifest.json``: what the masks depend on (the model file's sha256 and metadata, the threshold, the
  post-processing), written when the folder is first used. A later run with other settings is refused with the
  remedy (``--overwrite``, or another folder): masks from two models never mix silently.
- ``results.csv``: one row per image, appended and flushed as each image's outputs are completely written, so a
  killed run keeps the rows of everything it finished; rows of earlier runs stay. An image counts as done only when
  its row says ok, the input file has the size and modification time the row records, and the mask on disk still
  has the recorded sha256 (a truncated or replaced mask is redone). On close, when it holds more than one line per
  image (images redone, a line cut by a kill), the file is rewritten once, atomically, with one row per image.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from filelock import FileLock, Timeout

from .errors import UserError
from .files import file_sha256, remove_stale_temporaries, sync_folder_entries, write_failure, write_text_atomic

OUTPUT_FOLDERS = ("masks", "probs", "overlays")
MANIFEST = "manifest.json"
RESULTS = "results.csv"
LOCK = ".ultralbm.lock"
MANIFEST_FORMAT = "ultralbm-edge-run/1"
# results.csv, documented in the README ("results.csv columns").
CSV_FIELDS = [
    "path", "status", "error", "width", "height", "lesion_area_px", "lesion_fraction", "bbox_xywh",
    "mean_prob_in_lesion", "decode_ms", "infer_ms", "post_ms", "input_bytes", "input_mtime_ns", "mask_sha256",
]  # fmt: skip
# Spreadsheet programs run a cell that starts with one of these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_TAIL_BYTES = 1 << 16  # read from the journal's end to find its last complete row (a row is well under 1 KB)


class RunFolderError(UserError, ValueError):
    """The output folder is in use, or holds results made with other settings."""


@dataclass
class RunSettings:
    """Everything a mask depends on besides its input image."""

    model_sha256: str
    model: dict[str, Any]  # the model file's metadata (variant, scan, precision, preprocessing, source checkpoint)
    threshold: float
    keep_largest: bool
    fill_holes: bool
    min_component_fraction: float = 0.0  # what folders written before this setting existed used
    tool_version: str = field(default="", compare=False)  # recorded; the preprocessing id in ``model`` is compared

    def differences(self, other: "RunSettings") -> list[str]:
        mine, theirs = asdict(self), asdict(other)
        mine.pop("tool_version"), theirs.pop("tool_version")
        return [f"{k} {theirs[k]!r} -> {mine[k]!r}" for k in mine if mine[k] != theirs[k]]


def csv_safe(value: Any) -> Any:
    """A text cell a spreadsheet shows as text: a leading ' before a formula character."""
    return f"'{value}" if isinstance(value, str) and value.startswith(_FORMULA_START) else value


def _csv_text(value: str) -> str:
    return value[1:] if value.startswith("'") and value[1:].startswith(_FORMULA_START) else value


def input_key(path: Path) -> str:
    """How results.csv names an input: its absolute, normalised path (the same file whichever way the folder was
    spelt; a symbolic link keeps its own name)."""
    return os.path.abspath(path)


def input_stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


class RunFolder:
    """Open with ``with RunFolder(out, settings, overwrite) as run:``; see the module docstring."""

    def __init__(self, out_dir: Path | str, settings: RunSettings, overwrite: bool = False) -> None:
        self.out_dir = Path(out_dir)
        self.settings = settings
        self.overwrite = overwrite
        self.results_csv = self.out_dir / RESULTS
        self.rows: dict[str, dict[str, str]] = {}
        self._lock = FileLock(str(self.out_dir / LOCK))
        self._journal = None
        self._needs_compaction = False

    def __enter__(self) -> "RunFolder":
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise RunFolderError(f"{self.out_dir}: is a file, not a folder — choose an output folder with -o")
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._lock.acquire(timeout=0)
        except Timeout:
            raise RunFolderError(
                f"{self.out_dir}: another ultralbm-edge run is writing to this folder — wait for it to finish, or choose another -o"
            ) from None
        except OSError as e:
            raise RunFolderError(f"{self.out_dir}: cannot write to the output folder ({e.strerror}) — choose another -o") from None
        try:
            remove_stale_temporaries(self.out_dir)  # half-written files of a killed run; never counted as outputs
            self._check_manifest()
            self.rows = {} if self.overwrite else self._read_rows()
            self._drop_cut_line()
            self._journal = open(self.results_csv, "a" if self.rows else "w", newline="")
            self._writer = csv.DictWriter(self._journal, fieldnames=CSV_FIELDS, restval="", extrasaction="ignore")
            if not self.rows:
                self._writer.writeheader()
                self._journal.flush()
        except BaseException:
            self._lock.release()
            raise
        return self

    def _check_manifest(self) -> None:
        path = self.out_dir / MANIFEST
        if path.is_file() and not self.overwrite:
            try:
                recorded = json.loads(path.read_text())["settings"]
                previous = RunSettings(**recorded)
            except (ValueError, KeyError, TypeError) as e:
                raise RunFolderError(f"{path}: unreadable run manifest ({e}) — pass --overwrite to start this folder afresh") from None
            changed = self.settings.differences(previous)
            if changed:
                raise RunFolderError(
                    f"{self.out_dir}: holds masks made with other settings ({'; '.join(changed)}) — pass --overwrite to "
                    "redo every image with the new settings, or choose another -o"
                )
            return
        manifest = {"format": MANIFEST_FORMAT, "settings": asdict(self.settings)}
        write_text_atomic(path, json.dumps(manifest, indent=2) + "\n")

    def _read_rows(self) -> dict[str, dict[str, str]]:
        rows, records = self._read_journal(self.results_csv)
        # Rewritten on close only when it holds more than one line per image (rows of redone images, a cut line).
        self._needs_compaction = records != len(rows)
        return rows

    def _drop_cut_line(self) -> None:
        """A kill or power cut can leave the journal's last row cut short (even inside a quoted cell): cut the file
        back to its last complete row, so the rows this run appends are read as written (that image is redone)."""
        if not self.rows:
            return
        with open(self.results_csv, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            start = max(0, size - _TAIL_BYTES)
            f.seek(start)
            tail = f.read()
            end = tail.rfind(b"\r\n")  # csv's row terminator; a newline inside a cell is a bare \n
            if not tail.endswith(b"\n") and end >= 0:
                f.truncate(start + end + 2)

    @staticmethod
    def read_results(results_csv: Path) -> dict[str, dict[str, str]]:
        """The latest row per image of a results.csv (a line cut by a kill is ignored)."""
        return RunFolder._read_journal(results_csv)[0]

    @staticmethod
    def _read_journal(results_csv: Path) -> tuple[dict[str, dict[str, str]], int]:
        """The latest complete row per image, and how many lines of rows the file holds."""
        if not results_csv.is_file():
            return {}, 0
        rows: dict[str, dict[str, str]] = {}
        records = 0
        with open(results_csv, newline="") as f:
            for row in csv.DictReader(f):
                records += 1
                # A row with too many cells has a None key, one with too few None values (a line cut short).
                if row.get("path") and row.get("status") and None not in row and None not in row.values():
                    rows[_csv_text(row["path"])] = {**row, "path": _csv_text(row["path"])}
        return rows, records

    def is_done(self, path: Path, outputs: Iterable[Path], mask: Path) -> bool:
        """Whether ``path``'s outputs from an earlier run can be kept (see the module docstring)."""
        row = self.rows.get(input_key(path))
        if row is None or row["status"] != "ok":
            return False
        try:
            if (int(row["input_bytes"]), int(row["input_mtime_ns"])) != input_stamp(path):
                return False  # the input changed since
            return all(p.is_file() for p in outputs) and file_sha256(mask) == row["mask_sha256"]
        except (OSError, ValueError, KeyError):
            return False

    def record(self, row: dict[str, Any], flush: bool = True) -> None:
        """Append an image's row (after its outputs are completely written); ``flush`` pushes it (and the rows before
        it) to the operating system. A row lost in a crash only means its image is done again."""
        try:
            self._writer.writerow({k: csv_safe(v) for k, v in row.items()})
            if flush:
                self._journal.flush()
        except OSError as e:
            raise write_failure(e, f"{self.results_csv}") from None
        key = os.path.abspath(str(row["path"]))  # input_key, without a Path
        self._needs_compaction |= key in self.rows  # an image redone: its earlier row is still in the journal
        self.rows[key] = {k: str(v) for k, v in row.items()}

    def record_flush(self) -> None:
        try:
            self._journal.flush()
        except OSError as e:
            raise write_failure(e, f"{self.results_csv}") from None

    def __exit__(self, *exc: object) -> None:
        try:
            if self._journal is not None:
                try:
                    self._journal.flush()
                    os.fsync(self._journal.fileno())
                finally:
                    self._journal.close()
                for folder in (self.out_dir / name for name in OUTPUT_FOLDERS):
                    if folder.is_dir():
                        sync_folder_entries(folder)  # the outputs' renames, once for the whole run
                if self._needs_compaction:
                    self._compact()
        except OSError as e:
            if exc[0] is None:  # an earlier error already explains the stop
                raise write_failure(e, f"{self.results_csv}") from None
        finally:
            self._lock.release()

    def _compact(self) -> None:
        """One row per image (the latest), written atomically; on a full disk the appended journal stays as it is
        (still complete, only with repeated rows for images redone)."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: csv_safe(v) for k, v in row.items()} for row in self.read_results(self.results_csv).values())
        try:
            write_text_atomic(self.results_csv, buf.getvalue())
        except OSError:
            pass
