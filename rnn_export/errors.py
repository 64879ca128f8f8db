"""The toolkit's typed errors share one base, so that the CLI maps them to exit codes in one place.

Most errors live in the module that raises them (ConfigError, DataError, ExportError...);
CheckpointError lives here because both rnn_export.checkpoint and the readers of its
files (rnn_export.runfiles) raise it.

Every error for bad input (a file, a folder, an option, a model) is an InputError: its
message says what was expected and what was got, and names the path. The CLI prints it
as one line, "error: MESSAGE", and exits 2 (rnn_export.cli).
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input the user can fix: the CLI prints the message as one line and exits 2."""


class CheckpointError(InputError):
    """A RUN_DIR that is missing, incomplete, corrupt or foreign; the message names the file."""


def decode_utf8(raw: bytes, where, error: type = InputError, *, first_line: int = 1) -> str:
    """raw as UTF-8 text (a leading byte-order mark dropped), or error naming the line.

    Args:
        raw: the file's bytes, or a piece of them that starts a line.
        where: the file, named in the message ("PATH:LINE: ...").
        error: the InputError type to raise.
        first_line: the number of raw's first line in the file; a byte-order mark is
            dropped only from line 1 (the start of the file).
    """
    try:
        return raw.decode("utf-8-sig" if first_line == 1 else "utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + first_line
        raise error(
            f"{where}:{line}: expected UTF-8 text; byte {e.start} (0x{raw[e.start]:02x}) "
            f"is not valid UTF-8 ({e.reason})"
        ) from None
