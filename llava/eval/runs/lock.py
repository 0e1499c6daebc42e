"""An exclusive lock on an answers file, so that two runs never write into one file.

The lock is ``<answers file, symlinks resolved>.lock``, held with ``flock`` for the whole run
and naming its holder (pid, host, start time). A second run refuses at once and names the
holder. A lock file left by a process that died (kill -9, power loss) is taken over: the kernel
released its ``flock``; where ``flock`` is not supported, a holder on this host whose pid is
gone counts as dead.
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import json
import os
import socket

from .errors import RunError


def lock_path(answers_file: str) -> str:
    return os.path.realpath(answers_file) + ".lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            obj = json.load(fh)
        return obj if isinstance(obj, dict) else {}
    except (OSError, ValueError):
        return {}


def _holder_dead(holder: dict) -> bool:
    """Whether a recorded holder is a process of this host that no longer exists."""
    pid = holder.get("pid")
    return holder.get("host") == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid)


def _describe(holder: dict) -> str:
    if not holder:
        return "another process"
    return f"pid {holder.get('pid')} on {holder.get('host')} (since {holder.get('since')})"


class AnswersLock:
    """``with AnswersLock(answers_file): ...`` — raises :class:`RunError` if another run holds it."""

    def __init__(self, answers_file: str):
        self.answers_file = answers_file
        self.path = lock_path(answers_file)
        self.fd: int | None = None

    def acquire(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    self._refuse()
                holder = _holder(self.path)  # flock is not supported here: judge by the recorded pid
                if holder and not _holder_dead(holder):
                    self._refuse()
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:  # the holder removed the file between our open and our lock: retry
                os.close(fd)
                continue
            info = {"pid": os.getpid(), "host": socket.gethostname(),
                    "since": _dt.datetime.now().isoformat(timespec="seconds"),
                    "answers_file": os.path.abspath(self.answers_file)}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
            self.fd = fd
            return
        raise RunError(f"could not lock {self.path}; another run keeps replacing it")

    def _refuse(self) -> None:
        raise RunError(f"{self.answers_file} is being written by {_describe(_holder(self.path))}; "
                       f"wait for that run to end (its lock: {self.path})")

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.remove(self.path)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> AnswersLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


__all__ = ["AnswersLock", "lock_path"]
