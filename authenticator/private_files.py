"""Files that hold or guard key material, on a machine shared with other users.

The state file holds the master key: whoever reads it can unwrap every credential ID the key
ever issued. A path given on the command line is therefore hostile ground until checked
(DESIGN.md "Security at the edges"):

- a file is opened with ``O_NOFOLLOW`` (a planted symlink is refused, never followed, never
  chmod'ed), created 0600 from its first byte, and then checked *on the opened descriptor*
  (``fstat``, so the answer cannot change between check and use): a regular file, owned by the
  effective uid, with one link (a second hard link made by someone else would be a second name
  that outlives our checks);
- a file that is readable or writable by group or others is refused, not silently re-secured:
  its secrets may already have been copied, and only its owner can judge that (the message
  says how to re-secure it, or to start a new key);
- every directory from the file up to ``/`` must be owned by us or root, and writable by no one
  else unless sticky (as ``/tmp`` is: others may add names there but not rename or remove ours)
  or group-writable only through our own private group. A directory someone else can write is
  one where they can swap our file for theirs between two of our opens.

Errors are :class:`PrivateFileError` with one sentence a person can act on.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import pwd
import secrets
import stat
from pathlib import Path


class PrivateFileError(Exception):
    """A key file or directory cannot be used safely; the message says why and what to do."""


def _uid_name(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _private_group(gid: int, uid: int) -> bool:
    """True if ``gid`` is the user-private group of ``uid`` (Debian's usergroups scheme): its
    only possible members are that user, so group-writable there is still owner-only."""
    try:
        me = pwd.getpwuid(uid)
        group = grp.getgrgid(gid)
    except KeyError:
        return False
    if me.pw_gid != gid or any(member != me.pw_name for member in group.gr_mem):
        return False
    return all(p.pw_gid != gid or p.pw_uid == uid for p in pwd.getpwall())


def _open_error(path: Path, exc: OSError, what: str) -> PrivateFileError:
    if exc.errno == errno.ELOOP:
        return PrivateFileError(
            f"{path} is a symbolic link; softkey never follows links for its {what}: "
            "give the real path instead"
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        try:
            owner = os.lstat(path).st_uid
        except OSError:
            owner = os.geteuid()
        if owner != os.geteuid():
            return PrivateFileError(
                f"{path} belongs to {_uid_name(owner)}, not to you: another user may have "
                "planted it; move it away or use another path"
            )
        if os.path.lexists(path):
            return PrivateFileError(
                f"{path} is read-only for you and softkey must write it; `chmod 600 {path}` "
                "or use another path"
            )
        if not os.access(path.parent, os.W_OK | os.X_OK):
            return PrivateFileError(
                f"cannot create {path.name} in {path.parent}: the directory is read-only for "
                f"you, and softkey writes next to its state; `chmod u+w {path.parent}` or use "
                "another path"
            )
        return PrivateFileError(
            f"permission denied opening {path}: it belongs to another user or its directory "
            "is read-only; use a file and directory of your own"
        )
    if exc.errno == errno.ENOENT:
        return PrivateFileError(
            f"{path.parent} does not exist; create it (mkdir -m 700 {path.parent}) or choose "
            "another path"
        )
    if exc.errno == errno.EISDIR:
        return PrivateFileError(f"{path} is a directory; give a file path for the {what}")
    if exc.errno == errno.EROFS:
        return PrivateFileError(f"{path} is on a read-only file system; choose another path")
    return PrivateFileError(f"cannot open {path} ({os.strerror(exc.errno or 0)})")


def check_descriptor(fd: int, path: Path, what: str = "key files") -> os.stat_result:
    """Refuse a descriptor that is not a private regular file of ours with one link."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise PrivateFileError(f"{path} is not a regular file; softkey refuses it as {what}")
    euid = os.geteuid()
    if st.st_uid != euid:
        raise PrivateFileError(
            f"{path} belongs to {_uid_name(st.st_uid)}, not to you ({_uid_name(euid)}): "
            "another user may have planted it or be able to read it; move it away or use "
            "another path"
        )
    if st.st_nlink != 1:
        raise PrivateFileError(
            f"{path} has {st.st_nlink} hard links; another name for it could outlive softkey's "
            "checks: remove the other links (find -samefile) or use another path"
        )
    if stat.S_IMODE(st.st_mode) & 0o077:
        mode = oct(stat.S_IMODE(st.st_mode))
        raise PrivateFileError(
            f"{path} is accessible to other users (mode {mode}) and its secrets may already "
            f"have been copied; if you are sure nobody else read it, run `chmod 600 {path}` "
            "and retry, otherwise start a new key and re-register your credentials"
        )
    return st


def check_directory(directory: Path) -> None:
    """Refuse a directory (or any of its parents) whose entries another user could change."""
    euid = os.geteuid()
    try:
        real = Path(os.path.realpath(directory, strict=True))
    except FileNotFoundError:
        raise PrivateFileError(
            f"{directory} does not exist; create it (mkdir -m 700 {directory}) or choose "
            "another path"
        ) from None
    except OSError as exc:
        raise PrivateFileError(f"cannot use {directory} ({os.strerror(exc.errno or 0)})") from None
    for d in (real, *real.parents):
        st = os.stat(d)
        if not stat.S_ISDIR(st.st_mode):
            raise PrivateFileError(f"{directory} is not a directory")
        where = "" if d == real else f" (its parent {d})"
        if st.st_uid not in (euid, 0):
            raise PrivateFileError(
                f"{directory}{where} belongs to {_uid_name(st.st_uid)}, who could replace "
                "softkey's files there; keep the key in a directory of your own"
            )
        sticky = bool(st.st_mode & stat.S_ISVTX)
        if st.st_mode & stat.S_IWOTH and not sticky:
            raise PrivateFileError(
                f"{directory}{where} is writable by every user, who could replace softkey's "
                f"files there; run `chmod o-w {d}` or keep the key in a directory of your own"
            )
        if (
            st.st_mode & stat.S_IWGRP
            and not sticky
            and not (st.st_uid == euid and _private_group(st.st_gid, euid))
        ):
            raise PrivateFileError(
                f"{directory}{where} is writable by its group, whose members could replace "
                f"softkey's files there; run `chmod g-w {d}` or keep the key in a directory of "
                "your own"
            )


def write_private_file(
    path: str | os.PathLike[str], data: bytes, *, what: str = "file"
) -> os.stat_result:
    """``data`` to ``path`` with mode 0600 from its first byte, atomically; returns the new
    file's stat (its inode, for a later "is it still ours?").

    The temporary file beside ``path`` has an unguessable name and is created exclusively
    without following links (``open_private``), so another user of a shared directory can
    neither pre-create it nor point it elsewhere; the rename replaces whatever ``path`` was
    (a planted symlink itself, never its target). Whether an existing ``path`` may be replaced
    is the caller's decision."""
    path = Path(path)
    if not path.parent.is_dir():
        raise PrivateFileError(f"{path.parent} does not exist; create it or choose another path")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = open_private(tmp, exclusive=True, what=what)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
            st = os.fstat(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise PrivateFileError(
            f"cannot write {path} ({os.strerror(exc.errno or 0)}); choose another path"
        ) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return st


def is_private_dir(directory: Path) -> bool:
    """True if ``directory`` exists, is ours, and no one else can write in it."""
    try:
        st = os.stat(directory)
    except OSError:
        return False
    euid = os.geteuid()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != euid or st.st_mode & stat.S_IWOTH:
        return False
    return not st.st_mode & stat.S_IWGRP or _private_group(st.st_gid, euid)


def open_private(
    path: str | os.PathLike[str],
    *,
    create: bool = True,
    exclusive: bool = False,
    what: str = "key files",
) -> int:
    """Open (or create, 0600) ``path`` read-write without following links; returns a checked
    descriptor. ``exclusive``: the file must not exist yet."""
    path = Path(path)
    # O_NONBLOCK: a FIFO planted under our name must not hang the open; it is then refused
    # by the S_ISREG check (the flag means nothing for regular files).
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    created = False
    try:
        if create:
            try:
                fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
                created = True
            except FileExistsError:
                if exclusive:
                    raise
                fd = os.open(path, flags)
        else:
            fd = os.open(path, flags)
    except FileExistsError:
        raise PrivateFileError(f"{path} already exists; remove it or choose another path") from None
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            raise PrivateFileError(f"{path} already exists") from None
        raise _open_error(path, exc, what) from None
    try:
        if created:
            # The umask can only have removed bits; set exactly 0600 on the descriptor (a
            # umask like 0277 would otherwise leave a file we cannot write).
            os.fchmod(fd, 0o600)
        check_descriptor(fd, path, what)
    except BaseException:
        os.close(fd)
        if created:
            # Only our own fresh file: the name cannot have been swapped while we hold it
            # in a checked directory.
            with contextlib.suppress(OSError):
                os.unlink(path)
        raise
    return fd


def check_existing(path: str | os.PathLike[str], what: str = "key files") -> bool:
    """Check ``path`` if it exists (without opening a FIFO or following a link); True if it
    exists. For files another program (SQLite) will open by name."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode):
        raise PrivateFileError(
            f"{path} is a symbolic link; softkey never follows links for its {what}: "
            "remove it and retry"
        )
    if not stat.S_ISREG(st.st_mode):
        raise PrivateFileError(f"{path} is not a regular file; remove it and retry")
    fd = open_private(path, create=False, what=what)
    os.close(fd)
    return True


def make_private_dir(directory: Path, parents: bool = False) -> None:
    """Create ``directory`` 0700 (and, with ``parents``, each missing parent 0700 too), or check
    an existing one is ours and private."""
    missing = [d for d in (directory, *directory.parents) if not os.path.lexists(d)]
    if not parents and len(missing) > 1:
        raise PrivateFileError(
            f"{directory.parent} does not exist; create it or choose another path"
        )
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise PrivateFileError(
                f"cannot create {d} ({os.strerror(exc.errno or 0)}); create it yourself "
                "(mkdir -m 700) or choose another path"
            ) from None
        # mkdir's mode went through the umask; set 0700 on what we just made, through a
        # descriptor opened without following links.
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            if os.fstat(fd).st_uid == os.geteuid():
                os.fchmod(fd, 0o700)
        finally:
            os.close(fd)
    check_directory(directory)
