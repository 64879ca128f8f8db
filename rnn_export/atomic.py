"""Writing outputs so that nothing is lost: a file or a folder appears whole or not at all.

Every output path is checked before the work that fills it (check_file_output,
check_folder_output): an existing path of the wrong kind (a FIFO, a character device such
as /dev/null, a folder where a file is expected, a file where a folder is expected) is
refused, and so is a parent folder that cannot be written or created.

A file is written to a synced temporary file in its folder, `.NAME.PID.HEX.tmp`, and
renamed over the target (os.replace is atomic): at every instant the path holds the old
file or the new one, whole.
A file written in pieces (replacing: rnn-export score's outputs) takes the same route.

A folder (a RUN_DIR) is built and synced in a temporary folder next to it,
`.NAME.tmp-PID-HEX`, then swapped in:
    - on Linux, by renameat2(RENAME_EXCHANGE): the two folders trade names in one atomic
      step, so that NAME holds the old run or the new one at every instant; the old run,
      now under the temporary name, is deleted after;
    - elsewhere (or on a filesystem without it), by two renames: NAME moves aside to
      `.NAME.old-PID-HEX`, the new folder takes its name, the old one is deleted. A kill
      between the two renames leaves no NAME: the next swap_in or recover_folder of NAME
      renames the old run back first.
Temporaries carry the writer's process id; those of processes that no longer run (a
kill -9, a power cut) are removed by the next write of the same path (recover_folder,
replace_file). A process id reused by another live process keeps its temporary until
that process ends: the cost is disk space, never a lost run.

Errors name the path: an OSError while writing becomes a WriteError "PATH: cannot
write: REASON" (full disk, read-only filesystem, permissions), and the target is as it
was.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import secrets
import shutil
import signal
import stat
import sys
import threading
from pathlib import Path

from rnn_export.errors import InputError

# One write call at most this many bytes: some systems refuse larger single writes.
_CHUNK = 1 << 30
_RENAME_EXCHANGE = 2  # linux/fs.h


class WriteError(InputError):
    """An output path that is of the wrong kind or cannot be written; the message names it."""


def os_error_text(error: OSError) -> str:
    """An OSError as "PATH: REASON" (both paths of a rename), or its text when it has none."""
    paths = [str(f) for f in (error.filename, error.filename2) if f is not None]
    if error.strerror is None:
        return str(error)
    return f"{' -> '.join(paths)}: {error.strerror}" if paths else error.strerror


def path_kind(path: Path) -> str | None:
    """What is at path, for messages ("a folder", "a regular file", "a FIFO"...); None: nothing."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a broken symbolic link" if os.path.islink(path) else None
    except NotADirectoryError:
        return None  # a parent is a file: nothing can be at path
    kinds = (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def check_file_output(path: str | Path, what: str = "a file") -> Path:
    """Refuse an output file path that cannot be written, before the work that fills it.

    Args:
        path: the file to write; absent, or a regular file (replaced atomically later).
        what: what the file is, for messages ("the .onnx file", "the report").

    Returns:
        path as a Path.

    Raises:
        WriteError: path is a folder, a FIFO, a device or anything but a regular file;
            or its folder is missing, not a folder, or not writable.
    """
    path = Path(path)
    kind = path_kind(path)
    if kind == "a folder":
        raise WriteError(f"{path}: is a folder; expected the path of {what} to write")
    if kind not in (None, "a regular file"):
        raise WriteError(
            f"{path}: is {kind}; expected {what} to write: a new path or a regular file to replace"
        )
    folder = path.parent
    folder_kind = path_kind(folder)
    if folder_kind is None:
        raise WriteError(f"{path}: cannot write: folder {folder} does not exist")
    if folder_kind != "a folder":
        raise WriteError(f"{path}: cannot write: {folder} is {folder_kind}, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise WriteError(f"{path}: cannot write: folder {folder} is not writable")
    return path


def check_folder_output(path: str | Path, what: str = "a folder") -> Path:
    """Refuse an output folder path that cannot be made, before the work that fills it.

    The nearest existing ancestor must be a folder in which a folder can be created: this
    creates and removes an empty probe folder there (root passes every access check, so
    only trying tells, e.g. under /proc).

    Raises:
        WriteError: path exists and is not a folder, or its parent cannot be created.
    """
    path = Path(path)
    kind = path_kind(path)
    if kind not in (None, "a folder"):
        raise WriteError(
            f"{path}: is {kind}; expected {what} to write: a new path or a folder to replace"
        )
    ancestor = path.absolute().parent
    while path_kind(ancestor) is None and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if path_kind(ancestor) != "a folder":
        raise WriteError(f"{path}: cannot create it: {ancestor} is {path_kind(ancestor)}")
    # Named as swap_in's temporaries are, so that recover_folder removes one a kill left.
    probe = ancestor / f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        try:
            os.mkdir(probe)
        finally:  # also when an interruption arrives as the probe appears
            with contextlib.suppress(OSError):
                os.rmdir(probe)
    except OSError as e:
        raise WriteError(f"{path}: cannot create it: {ancestor}: {e.strerror}") from None
    return path


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether the paths a and b name one file: the same path, or another path to it (a
    symbolic link, a hard link, "..")."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (or cannot be read): not one file
        return False


def write_file(path: Path, data: bytes) -> None:
    """Write data to a new file at path and sync it (for files inside a temporary folder).

    Raises:
        WriteError: the write failed (the message names path).
    """
    try:
        _write_synced(path, data)
    except OSError as e:
        raise WriteError(f"{path}: cannot write: {e.strerror}") from e


def replace_file(path: str | Path, data: bytes) -> None:
    """Replace path by a file holding data: via a synced temporary file and a rename.

    Raises:
        WriteError: the write failed; path is as it was and no temporary file is left.
    """
    path = Path(path)
    tmp = _temp_file(path)
    try:
        _write_synced(tmp, data)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as e:
        _discard(tmp, path, e)
        raise


@contextlib.contextmanager
def replacing(path: str | Path):
    """Write path piece by piece: yields a binary file (a temporary one next to path) that
    replaces path, synced, when the block ends without an error.

    For outputs written in chunks (rnn-export score): memory stays bounded, and a failure
    or an interruption half-way leaves path as it was and no temporary file behind.

    Raises:
        WriteError: a write, the sync or the rename failed (the message names path).
    """
    path = Path(path)
    tmp = _temp_file(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as e:
        _discard(tmp, path, e)
        raise


@contextlib.contextmanager
def terminations_as_interrupts():
    """In the block, SIGTERM and SIGHUP raise KeyboardInterrupt as Ctrl-C's SIGINT does, so
    that a kill or a closed terminal cleans up as Ctrl-C does (replacing's temporary file
    removed, the output as it was). Signal handlers belong to the main thread: elsewhere
    the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    kinds = [signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    before = {kind: signal.signal(kind, interrupt) for kind in kinds}
    try:
        yield
    finally:
        for kind, handler in before.items():
            signal.signal(kind, signal.SIG_DFL if handler is None else handler)


def _temp_file(path: Path) -> Path:
    """A new temporary file name next to path; those dead writers of path left are removed."""
    _remove_stale(path.parent, rf"\.{re.escape(path.name)}\.(\d+)\.[0-9a-f]+\.tmp")
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _discard(tmp: Path, path: Path, error: BaseException) -> None:
    """Remove tmp after a failed write of path; an OSError becomes a WriteError naming path.

    Also on an interruption (KeyboardInterrupt...): no temporary file is left behind.
    """
    with contextlib.suppress(OSError):
        os.unlink(tmp)
    if isinstance(error, OSError):
        raise WriteError(f"{path}: cannot write: {error.strerror}") from error


def fsync_dir(path: Path) -> None:
    """Make a rename inside folder `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def temp_folder(dest: Path):
    """A new, empty temporary folder next to dest, to be filled and swapped in by swap_in;
    removed when the block ends (what is left of it after a swap_in, or all of it after a
    failure or an interruption).

    The folder is made inside the block's protection: an interruption (Ctrl-C, or a
    signal raised as one) that arrives as it appears cannot leave it behind.

    Raises:
        WriteError: it cannot be made (the message names dest).
    """
    recover_folder(dest)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(tmp)
        except OSError as e:
            raise WriteError(f"{dest}: cannot write: {e.strerror}") from e
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def swap_in(tmp: Path, dest: Path) -> None:
    """Make the complete, synced folder tmp take dest's place; an earlier dest is deleted.

    At every instant dest holds the old folder or the new one (see the module docstring
    for the one gap where renameat2 is missing, which recover_folder closes).

    Raises:
        WriteError: a rename failed; dest is as it was.
    """
    try:
        if not dest.exists():
            os.rename(tmp, dest)
            fsync_dir(dest.parent)
            return
        try:
            _exchange(tmp, dest)
            old = tmp  # after the exchange the temporary name holds the old folder
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EXDEV):
                raise
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
            os.rename(dest, old)
            try:
                os.rename(tmp, dest)
            except BaseException:
                os.rename(old, dest)
                raise
        fsync_dir(dest.parent)
    except OSError as e:
        raise WriteError(f"{dest}: cannot write: {e.strerror}") from e
    shutil.rmtree(old, ignore_errors=True)


def recover_folder(dest: Path) -> None:
    """Finish what dead writers of dest left: restore a run moved aside, remove temporaries.

    Only temporaries of processes that no longer run are touched (see the module docstring).
    """
    stale = _stale(dest.parent, rf"\.{re.escape(dest.name)}\.(old|tmp)-(\d+)-[0-9a-f]+")
    for entry in stale:  # ".old-" sorts before ".tmp-": the old run is restored first
        if ".old-" in entry.name and not dest.exists():
            # The swap was killed between its two renames: this is the only copy of the
            # old run. Should the rename back fail, it stays where it is.
            with contextlib.suppress(OSError):
                os.rename(entry, dest)
            continue
        shutil.rmtree(entry, ignore_errors=True)


def _remove_stale(folder: Path, pattern: str) -> None:
    for entry in _stale(folder, pattern):
        with contextlib.suppress(OSError):
            os.unlink(entry)


def _stale(folder: Path, pattern: str) -> list[Path]:
    """Entries of folder whose name matches pattern (last group: a pid) of a dead process."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    found = []
    for name in sorted(names):
        match = re.fullmatch(pattern, name)
        if match and not _running(int(match.groups()[-1])):
            found.append(folder / name)
    return found


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process (or an id we cannot ask about): keep its files
    return True


def _write_synced(path: Path, data: bytes) -> None:
    """Create path (it must not exist), write data, sync; OSError as the system gives it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view[:_CHUNK]) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> None:
    """Swap the names a and b atomically (Linux renameat2 RENAME_EXCHANGE).

    Raises:
        OSError: ENOSYS where the system has no renameat2, EINVAL where the filesystem
            cannot exchange; other errors as rename(2) gives them.
    """
    if not sys.platform.startswith("linux"):
        raise OSError(errno.ENOSYS, "renameat2 is Linux only")
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        raise OSError(errno.ENOSYS, "this C library has no renameat2")
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(a), None, str(b))
