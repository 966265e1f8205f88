"""Run directory I/O: config.json, metrics.jsonl (a row per round, flushed), summary.json.

Also the rules every command that writes a run (or compare) directory follows:

- :func:`check_out_dir`: ``--out`` must be a path (not ``""``), and a directory that is not
  empty is refused unless ``overwrite`` is given, so one run never mixes with another's
  files (results, saved client students, checkpoints);
- :func:`clear_out_dir`: ``--overwrite`` starts clean: the old run's files are removed;
- :class:`RunDirLock`: one fedkd process at a time per directory (``fcntl.flock`` on
  ``<dir>/.fedkd.lock``, which holds the owner's pid), held for the whole run.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from fedkd.errors import ConfigError

LOCK_NAME = ".fedkd.lock"
"""The lock file inside a run or compare directory (see :class:`RunDirLock`)."""

#: files that mark a directory as fedkd's (``--overwrite`` replaces nothing else)
_MARKERS = ("config.json", "compare.json", LOCK_NAME)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file ``.<name>.tmp``, fsync, rename.

    A reader never sees a half-written file under ``path``.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=float) + "\n").encode())


class MetricsLog:
    """Appends one JSON line per completed round and fsyncs it, so a killed run keeps it."""

    def __init__(self, path: Path, rows: list[dict[str, Any]] | None = None) -> None:
        self.path = path
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(json.dumps(r, default=float) + "\n" for r in rows or []))
        os.replace(tmp, path)

    def append(self, row: dict[str, Any]) -> None:
        """Append ``row`` as one line."""
        with self.path.open("a") as f:
            f.write(json.dumps(row, default=float) + "\n")
            f.flush()
            os.fsync(f.fileno())


@dataclass
class RunResult:
    """What :func:`fedkd.run` returns: the summary and the per-round metrics."""

    summary: dict[str, Any]
    metrics: list[dict[str, Any]] = field(default_factory=list)
    out_dir: Path | None = None

    def __getitem__(self, key: str) -> Any:
        return self.summary[key]


# --------------------------------------------------------------------------- run directories
def out_path(out: str | Path, flag: str = "--out") -> Path:
    """``out`` as a path; an empty string is refused (it would mean the working directory).

    Raises
    ------
    ConfigError
        One line naming ``flag``.

    """
    if isinstance(out, str) and not out.strip():
        raise ConfigError(f"{flag}={out!r}: give a directory path, e.g. runs/my-run")
    return Path(out)


def unique_dir(base: Path) -> Path:
    """``base`` if it does not exist yet, else the first free ``base-2``, ``base-3``, ..."""
    path, n = base, 1
    while path.exists() or path.is_symlink():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def _entries(folder: Path) -> list[Path]:
    """What ``folder`` holds besides the lock file."""
    return [p for p in folder.iterdir() if p.name != LOCK_NAME]


def check_out_dir(out: str | Path, overwrite: bool = False, flag: str = "--out") -> Path:
    """Check that a new run (or compare) may write into ``out``; nothing is changed yet.

    Parameters
    ----------
    out : path
        The directory; it may not exist yet.
    overwrite : bool
        Allow a non-empty directory, if it is a fedkd run or compare directory (it holds
        ``config.json``, ``compare.json`` or ``.fedkd.lock``); :func:`clear_out_dir` then
        empties it.
    flag : str
        The option named in errors.

    Returns
    -------
    Path

    Raises
    ------
    ConfigError
        One line: ``out`` is empty text, a file, a directory that is not empty (without
        ``overwrite``) or, with ``overwrite``, a non-empty directory that is not fedkd's.

    """
    path = out_path(out, flag)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise ConfigError(
            f"{flag} {path}: exists and is a file or a symbolic link; give a directory path"
        )
    if not path.is_dir() or not _entries(path):
        return path
    if not overwrite:
        raise ConfigError(
            f"{flag} {path}: directory is not empty (it holds an earlier run's files); "
            "give a new directory, --overwrite to replace that run, or --resume to continue it"
        )
    if not any((path / m).exists() or (path / m).is_symlink() for m in _MARKERS):
        raise ConfigError(
            f"{flag} {path}: directory is not empty and holds no fedkd run (no config.json "
            "or compare.json); --overwrite only replaces fedkd run directories"
        )
    return path


def clear_out_dir(folder: Path) -> None:
    """Remove everything in ``folder`` but the lock file (links are removed, not followed).

    Call it while holding the folder's :class:`RunDirLock`, after :func:`check_out_dir`
    with ``overwrite=True``.
    """
    for p in _entries(folder):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


class RunDirLock:
    """An exclusive, non-blocking lock on a run directory, held by one fedkd process.

    ``fcntl.flock`` on ``<folder>/.fedkd.lock`` (created, along with ``folder``); the
    holder writes its pid into the file. The kernel releases the lock when the holder
    exits, however it ends (even ``kill -9``), so a stale lock file never blocks a run.
    Use as a context manager.

    Raises
    ------
    ConfigError
        On entry, when another process holds the lock: "... is locked by another fedkd
        process (pid N)".

    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock (see the class)."""
        import fcntl

        self.folder.mkdir(parents=True, exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as err:
            raise ConfigError(
                f"run directory {self.folder}: cannot open its lock file {LOCK_NAME} "
                f"({err.strerror}); it must be a regular file"
            ) from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ConfigError(f"run directory {self.folder}: {LOCK_NAME} is not a regular file")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.pread(fd, 32, 0).decode(errors="replace").strip()
                pid = text if text.isdigit() else "unknown"
                raise ConfigError(
                    f"run directory {self.folder} is locked by another fedkd process "
                    f"(pid {pid}); wait for it to end or use another directory"
                ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Release the lock (the file stays: removing it would race with a new holder)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor releases the flock
            self._fd = None

    def __enter__(self) -> RunDirLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
