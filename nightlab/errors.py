"""Mistakes a user can make and fix, as opposed to bugs (docs/design.md 2.3).

A :class:`UserError` ends a stage or a command with one ``error:`` block and exit code 2: the
message names the file or the params key and the problem. :func:`as_user_error` also recognises
what the operating system and torch raise for a user's doing (a full disk, memory too small for
the batch size asked for) and says it in those terms; every other exception is a bug and keeps
its traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """A mistake of the user; the message names the file or key and the problem."""


class ConfigError(UserError, ValueError):
    """A params file (or a command-line option) that cannot be used."""


class DataError(UserError, ValueError):
    """Bad input data; the message names the file and the problem."""


# What torch's CPU and CUDA allocators say when a tensor does not fit: the batch size or the frame
# size the params ask for is too large for this machine, which the user can change.
_OUT_OF_MEMORY = ("DefaultCPUAllocator: can't allocate memory", "CUDA out of memory", "out of memory")
# A data-loader worker killed by the system: most often shared memory (/dev/shm) too small for its batches.
_WORKER_KILLED = "DataLoader worker"


def as_user_error(err: BaseException, doing: str = "") -> UserError | None:
    """``err`` as a user error with its message, or None when it is a bug.

    ``doing`` says what was running (``"stage train_image_model"``), for the out-of-memory hint.
    """
    if isinstance(err, UserError):
        return err
    if isinstance(err, OSError):
        return UserError(os_message(err))
    if isinstance(err, MemoryError) or (isinstance(err, RuntimeError) and any(s in str(err) for s in _OUT_OF_MEMORY)):
        first = (str(err).strip().splitlines() or ["out of memory"])[0]
        where = f" in {doing}" if doing else ""
        return UserError(f"out of memory{where}: {first}\n  lower the batch_size of what it trains (or "
                         "merge.batch_size / hdm.batch_size for inference), the frame size, or data-loader "
                         "workers; or run on a machine with more memory")
    if isinstance(err, RuntimeError) and _WORKER_KILLED in str(err) and "killed by signal" in str(err):
        first = str(err).strip().splitlines()[0]
        return UserError(f"{first}{' in ' + doing if doing else ''}\n  the system killed a data-loader worker, "
                         "most often for lack of shared memory (/dev/shm): set train.workers: 0 for that model, "
                         "or give the machine (or container) more shared memory")
    return None


def os_message(err: OSError) -> str:
    """An operating-system error with the path it concerns (or a note that the OS gave none)."""
    where = err.filename if err.filename is not None else "(the operating system named no file)"
    text = err.strerror or str(err) or type(err).__name__
    return f"{where}: {text}" + (f" (-> {err.filename2})" if err.filename2 else "")
