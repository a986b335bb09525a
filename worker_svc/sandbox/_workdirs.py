"""The worker's directory of runs' directories: each holds a run's script (and,
unsandboxed, is the run's working directory)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile

from worker_svc.sandbox._cgroups import MAX_SPARES, dead_workers_dirs


class Workdirs:
    """The runs' private working directories, all inside one directory of this
    executor's (``jobmesh-<worker pid>-…`` under the workdir root, mode 0700). It is
    removed on close, by the fork server when the worker dies, or by the next worker
    to start when both died. A sandboxed run sees none of it: its own root holds a
    copy of its script; an unsandboxed run works in its directory.

    A directory whose run left nothing behind (its cgroup emptied) and that is again
    as it was made (empty, mode 0700, the same owner, no extended attributes such as
    an ACL) is reused by a later run: making and removing a directory per run costs
    more than a short run (on ext4 each waits on a journal commit)."""

    def __init__(self, root: str) -> None:
        base = root or tempfile.gettempdir()
        for stale in dead_workers_dirs(base):  # a worker that died with its fork server
            shutil.rmtree(stale, ignore_errors=True)
        self.path = tempfile.mkdtemp(prefix=f"jobmesh-{os.getpid()}-", dir=base)  # mode 0700
        # A sandboxed run's new root is mounted here, in the run's own mount namespace.
        self.mount_point = os.path.join(self.path, "root")
        os.mkdir(self.mount_point, 0o700)
        self._owner = os.geteuid()
        self._spare: list[str] = []

    def take(self, source: str) -> tuple[str, str]:
        """A private directory holding the script: (directory, script path)."""
        workdir = self._spare.pop() if self._spare else tempfile.mkdtemp(prefix="run-", dir=self.path)
        script = os.path.join(workdir, "job.py")
        try:
            _write_new(script, source.encode("utf-8"))
        except BaseException:
            remove_workdir(workdir)
            raise
        return workdir, script

    def give_back(self, workdir: str, reusable: bool) -> None:
        """After the run: kept for reuse if ``reusable`` (nothing of the run is left to
        write into it) and it is as it was made once its script is removed; else removed."""
        if reusable and len(self._spare) < MAX_SPARES and self._emptied(workdir):
            self._spare.append(workdir)
        else:
            remove_workdir(workdir)

    def _emptied(self, workdir: str) -> bool:
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(workdir, "job.py"))
            info = os.lstat(workdir)
            if not stat.S_ISDIR(info.st_mode) or stat.S_IMODE(info.st_mode) != 0o700 or info.st_uid != self._owner:
                return False
            with os.scandir(workdir) as entries:
                if next(entries, None) is not None:
                    return False
            return not _xattrs(workdir)
        except OSError:
            return False

    def close(self) -> None:
        self._spare.clear()
        shutil.rmtree(self.path, ignore_errors=True)


def _write_new(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _xattrs(path: str) -> list[str]:
    try:
        return os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return []
        raise


def remove_workdir(path: str) -> None:
    try:  # the usual case: only the script is there
        os.unlink(os.path.join(path, "job.py"))
        os.rmdir(path)
    except OSError:
        shutil.rmtree(path, ignore_errors=True)
