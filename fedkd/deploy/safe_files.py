"""Writing a deployment folder without ever following a symbolic link."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from fedkd.deploy.inputs import DeployError

#: Entries ``init_deployment`` writes directly under its output folder.
GENERATED = ("certs", "keys", "flwr-home")

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC


def _open_dir(name: str | Path, dir_fd: int | None = None) -> int:
    """Open a folder without following a link in its last component."""
    return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)


def mkdir_private(name: str, dir_fd: int) -> int:
    """Create folder ``name`` (mode 0700) inside ``dir_fd`` and open it, without links."""
    os.mkdir(name, mode=0o700, dir_fd=dir_fd)
    return _open_dir(name, dir_fd)


def write_new_file(dir_fd: int, name: str, data: bytes, mode: int = 0o644) -> None:
    """Create file ``name`` inside the open folder ``dir_fd`` with ``mode`` from the start.

    ``O_CREAT | O_EXCL | O_NOFOLLOW``: an existing file or a (planted) symbolic link at
    ``name`` raises :class:`FileExistsError` and is left untouched; nothing is followed.
    """
    fd = os.open(name, _NEW_FILE_FLAGS, mode, dir_fd=dir_fd)
    with open(fd, "wb", closefd=True) as f:
        f.write(data)


def _find_link(dir_fd: int, name: str, rel: str) -> str | None:
    """The first symbolic link at or under ``name`` (relative path), or None."""
    st = os.lstat(name, dir_fd=dir_fd)
    if stat.S_ISLNK(st.st_mode):
        return rel
    if not stat.S_ISDIR(st.st_mode):
        return None
    fd = _open_dir(name, dir_fd)
    try:
        with os.scandir(fd) as entries:
            for entry in entries:
                found = _find_link(fd, entry.name, f"{rel}/{entry.name}")
                if found:
                    return found
    finally:
        os.close(fd)
    return None


def prepare_root(out: Path, force: bool) -> int:
    """Create or check the output folder; return an open descriptor of it."""
    shown = f"--out={str(out)!r}"
    try:
        st = os.lstat(out)
    except FileNotFoundError:
        try:
            os.mkdir(out, mode=0o700)
        except FileNotFoundError:
            raise DeployError(
                f"{shown}: its parent folder does not exist; create it first"
            ) from None
        except OSError as err:
            raise DeployError(f"{shown}: cannot create the folder: {err.strerror}") from None
    except OSError as err:
        raise DeployError(f"{shown}: cannot read: {err.strerror}") from None
    else:
        if stat.S_ISLNK(st.st_mode):
            raise DeployError(
                f"{shown}: is a symbolic link; give the real folder (links are not followed)"
            )
        if not stat.S_ISDIR(st.st_mode):
            raise DeployError(f"{shown}: exists and is not a folder")
    try:
        fd = _open_dir(out)
    except OSError as err:
        raise DeployError(f"{shown}: cannot open the folder: {err.strerror}") from None
    try:
        entries = sorted(os.listdir(fd))
        if entries and not force:
            listed = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise DeployError(
                f"{shown}: folder is not empty ({listed}); pass --force to replace an earlier "
                "'fedkd deploy init' there, or choose a new folder"
            )
        foreign = [e for e in entries if e not in GENERATED]
        if foreign:
            raise DeployError(
                f"{shown}: holds {foreign[0]!r}, which 'fedkd deploy init' does not write; "
                f"--force only replaces {', '.join(GENERATED)}: move it away or choose a new folder"
            )
        for entry in entries:
            link = _find_link(fd, entry, entry)
            if link:
                raise DeployError(
                    f"{shown}: holds a symbolic link {link!r}; refusing to replace a folder with "
                    "links in it (remove the link yourself)"
                )
        for entry in entries:
            if stat.S_ISDIR(os.lstat(entry, dir_fd=fd).st_mode):
                shutil.rmtree(entry, dir_fd=fd)
            else:
                os.unlink(entry, dir_fd=fd)
    except DeployError:
        os.close(fd)
        raise
    except OSError as err:
        os.close(fd)
        where = f" ({err.filename})" if err.filename else ""
        raise DeployError(f"{shown}: cannot clear the folder{where}: {err.strerror}") from None
    return fd
