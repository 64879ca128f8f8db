"""Writing outputs so that nothing is lost: a file or a folder appears whole or not at all.

A file is written to a synced temporary file in its folder and renamed over the target;
a folder (a RUN_DIR) is built in a temporary folder next to it and swapped in by rename.
Both the exporter and the checkpoint writer use these functions.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from pathlib import Path


def write_file(path: Path, data: bytes) -> None:
    """Write data to a new file at path and sync it (for files inside a temporary folder)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def replace_file(path: Path, data: bytes) -> None:
    """Replace path by a file holding data: via a synced temporary file and a rename.

    Raises:
        OSError: the write failed; path is as it was and no temporary file is left.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # An interruption (KeyboardInterrupt...) must not leave the temporary file behind.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def fsync_file(path: Path) -> None:
    """Sync a file written by someone else (e.g. a PNG drawn by matplotlib)."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    """Make a rename inside folder `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_folder(dest: Path) -> Path:
    """A new, empty temporary folder next to dest, to be swapped in by swap_in."""
    return Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))


def swap_in(tmp: Path, dest: Path) -> None:
    """Make the complete folder tmp take dest's place; an earlier dest is deleted after."""
    # The old folder moves aside before the new one takes its name, and is deleted
    # only once the new one is in place: at every moment dest is absent or complete.
    old = None
    if dest.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
        os.rmdir(old)
        os.rename(dest, old)
    try:
        os.rename(tmp, dest)
    except BaseException:
        if old is not None:
            os.rename(old, dest)
        raise
    fsync_dir(dest.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
