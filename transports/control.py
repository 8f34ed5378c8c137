"""The control socket of a running key: line-delimited JSON over a 0600 Unix socket.

One request per line, one response per line::

    {"op": "status"}                 -> {"ok": true, "profile": "ctap2.1", ...}
    {"op": "touch", "wait": 5}       -> {"ok": true, "request": {"purpose": ..., "rp_id": ...}}
    {"op": "bogus"}                  -> {"ok": false, "error": "unknown operation 'bogus'"}

Only the user who runs the key can connect, and the CLI talks only to a key of its own user:
the socket is 0600 in a directory only its owner can write (tools/paths.py), and both ends
check the other's uid with SO_PEERCRED before reading or sending a byte. A socket planted by
someone else is never connected to with a request, never deleted: it is an error.
Each connection gets its own thread, so a `touch --wait` never blocks `status`.

A streaming operation (``streams``, e.g. ``{"op": "subscribe"}`` for the key's events) keeps
its connection: after its first reply line it sends one line per item until the client hangs
up or the key stops (``stream()`` is the client side). It is reached through the same accept
loop, so the same SO_PEERCRED checks stand before its first byte.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import socket
import stat
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("softkey.control")

Handler = Callable[[dict[str, Any]], dict[str, Any]]
MAX_LINE = 64 * 1024


class Stream:
    """What a streaming operation writes to: one JSON line per ``send``."""

    def __init__(self, conn: socket.socket, closed: threading.Event) -> None:
        self._conn = conn
        self._closed = closed
        self._gone = False

    @property
    def open(self) -> bool:
        """The server still runs and the client has not hung up."""
        if self._gone or self._closed.is_set():
            return False
        try:
            readable, _, _ = select.select([self._conn], [], [], 0)
            if readable and not self._conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
                self._gone = True  # end of file: the client closed its end
        except (OSError, ValueError):
            self._gone = True
        return not self._gone

    def send(self, item: dict[str, Any]) -> bool:
        """One line to the client; False (and closed from then on) if it is gone."""
        if self._gone:
            return False
        try:
            self._conn.sendall(json.dumps(item).encode() + b"\n")
        except OSError:
            self._gone = True
        return not self._gone

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True if the server is closing meanwhile."""
        return self._closed.wait(seconds)


StreamHandler = Callable[[dict[str, Any], Stream], None]


class ControlError(Exception):
    """The control socket cannot be served or reached; the message says why."""


class NotRunning(ControlError):
    """No key is listening on that control socket."""


class OperationError(Exception):
    """A handler refuses a request; becomes {"ok": false, "error": message}."""


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a connected Unix socket (SO_PEERCRED: the
    kernel's record of who connected or bound it, which the peer cannot forge)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def _owner(uid: int) -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


class ControlServer:
    """Serves ``handlers[op](request) -> dict`` on a Unix socket until ``close()``."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        handlers: dict[str, Handler],
        streams: dict[str, StreamHandler] | None = None,
    ) -> None:
        self.path = Path(path)
        self.handlers = handlers
        self.streams: dict[str, StreamHandler] = dict(streams or {})
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        self._inode: tuple[int, int] | None = None

    def start(self) -> ControlServer:
        from softkey.authenticator.private_files import PrivateFileError, make_private_dir

        try:
            make_private_dir(self.path.parent)
        except PrivateFileError as exc:
            raise ControlError(f"cannot create the control socket {self.path}: {exc}") from None
        self.check_available()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Connecting needs write permission on the socket; with this umask nobody but the
        # owner ever has it, from bind() on (a chmod by path afterwards could be redirected).
        old_umask = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        except OSError as exc:
            sock.close()
            raise ControlError(f"cannot create the control socket {self.path}: {exc}") from None
        finally:
            os.umask(old_umask)
        st = os.lstat(self.path)
        if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.geteuid():
            sock.close()
            raise ControlError(f"the control socket {self.path} was replaced while starting")
        self._inode = (st.st_dev, st.st_ino)
        sock.listen(8)
        self._sock = sock
        self._thread = threading.Thread(
            target=self._accept_loop, name="softkey-control", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        self._closed.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            self._sock = None
        # Remove the socket only if it is still ours (a second instance may own the path).
        try:
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self._inode:
                self.path.unlink()
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join(2)

    def __enter__(self) -> ControlServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check_available(self) -> None:
        """Refuse if another key serves this socket; remove a stale one of ours left by a crash;
        never touch one that belongs to someone else."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise ControlError(
                f"{self.path} exists and is not a socket; move it away and start again"
            )
        if st.st_uid != os.geteuid():
            raise ControlError(
                f"{self.path} is a socket of {_owner(st.st_uid)}, not yours: someone else may "
                "be trying to pose as your key; it was left alone (ask them or an administrator "
                "to remove it), or use a different --key/--state"
            )
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(self.path))
        except OSError:
            self.path.unlink()  # ours, and nobody listens: left behind by a killed key
            return
        finally:
            probe.close()
        raise ControlError(
            f"another softkey is already running with this state (control socket {self.path}); "
            "stop it first or use a different --key/--state"
        )

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            sock = self._sock
            if sock is None:
                return
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            try:
                uid = peer_uid(conn)
            except OSError:
                conn.close()
                continue
            if uid != os.geteuid():
                # Only possible if the socket's mode or directory was loosened by hand; the
                # caller gets nothing, not even an error line.
                log.warning("refused a control connection from %s", _owner(uid))
                conn.close()
                continue
            threading.Thread(
                target=self._serve, args=(conn,), name="softkey-control-conn", daemon=True
            ).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as reader:
            while not self._closed.is_set():
                try:
                    line = reader.readline(MAX_LINE + 1)
                except OSError:
                    return
                if not line:
                    return
                streaming = self._stream_request(line)
                if streaming is not None:
                    handler, request = streaming
                    try:
                        handler(request, Stream(conn, self._closed))
                    except Exception:
                        log.exception("control stream %r failed", request.get("op"))
                    return  # a stream owns its connection to the end
                response = self.dispatch(line)
                try:
                    conn.sendall(json.dumps(response).encode() + b"\n")
                except OSError:
                    return

    def _stream_request(self, line: bytes) -> tuple[StreamHandler, dict[str, Any]] | None:
        if not self.streams or len(line) > MAX_LINE:
            return None
        try:
            request = json.loads(line)
        except ValueError:
            return None
        if not isinstance(request, dict) or not isinstance(request.get("op"), str):
            return None
        handler = self.streams.get(request["op"])
        return (handler, request) if handler is not None else None

    def dispatch(self, line: bytes) -> dict[str, Any]:
        if len(line) > MAX_LINE:
            return {"ok": False, "error": "request too long"}
        try:
            request = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "not a JSON line"}
        if not isinstance(request, dict) or not isinstance(request.get("op"), str):
            return {"ok": False, "error": 'a request is a JSON object with an "op" string'}
        handler = self.handlers.get(request["op"])
        if handler is None:
            return {"ok": False, "error": f"unknown operation {request['op']!r}"}
        try:
            result = handler(request)
        except OperationError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception:
            log.exception("control operation %r failed", request["op"])
            return {"ok": False, "error": "internal error (see the key's log)"}
        return {"ok": True, **result}


def _connect(path: Path, timeout: float) -> socket.socket:
    """A connection to our own key at ``path``; NotRunning / ControlError otherwise."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise NotRunning(f"no key is listening on {path}") from None
        except OSError as exc:
            raise ControlError(f"cannot reach the key at {path}: {exc}") from None
        # Before a single byte (a PIN, maybe) leaves: is this our own key?
        uid = peer_uid(sock)
        if uid != os.geteuid():
            raise ControlError(
                f"the control socket {path} is served by {_owner(uid)}, not by you: someone "
                "may be posing as your key, so nothing was sent; ask an administrator to look "
                "at it"
            )
    except BaseException:
        sock.close()
        raise
    return sock


def _parse_line(path: Path, line: bytes) -> dict[str, Any]:
    try:
        response = json.loads(line)
    except ValueError:
        raise ControlError(f"the key at {path} sent something that is not JSON") from None
    if not isinstance(response, dict):
        raise ControlError(f"the key at {path} sent an unexpected answer")
    return response


def stream(
    path: str | os.PathLike[str], op: str, *, timeout: float = 10.0, **params: Any
) -> Iterator[dict[str, Any]]:
    """A streaming request: yields the reply line, then every line the key sends until it
    closes the connection (the key stopped, or the stream ended). ``timeout`` bounds the
    connection and the first line; later lines may take as long as they take."""
    path = Path(path)
    sock = _connect(path, timeout)
    try:
        try:
            sock.sendall(json.dumps({"op": op, **params}).encode() + b"\n")
        except OSError as exc:
            raise ControlError(f"the key at {path} did not answer: {exc}") from None
        with sock.makefile("rb") as reader:
            first = True
            while True:
                try:
                    line = reader.readline(MAX_LINE + 1)
                except OSError as exc:
                    if first:
                        raise ControlError(f"the key at {path} did not answer: {exc}") from None
                    return  # the key went away
                if not line:
                    if first:
                        raise ControlError(
                            f"the key at {path} closed the connection without answering"
                        )
                    return
                yield _parse_line(path, line)
                if first:
                    first = False
                    sock.settimeout(None)
    finally:
        sock.close()


def call(
    path: str | os.PathLike[str], op: str, *, timeout: float = 10.0, **params: Any
) -> dict[str, Any]:
    """Send one request to a running key; raises NotRunning / ControlError."""
    path = Path(path)
    sock = _connect(path, timeout)
    try:
        try:
            sock.sendall(json.dumps({"op": op, **params}).encode() + b"\n")
            with sock.makefile("rb") as reader:
                line = reader.readline(MAX_LINE + 1)
        except OSError as exc:
            raise ControlError(f"the key at {path} did not answer: {exc}") from None
    finally:
        sock.close()
    if not line:
        raise ControlError(f"the key at {path} closed the connection without answering")
    return _parse_line(path, line)
