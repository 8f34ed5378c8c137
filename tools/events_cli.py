"""`softkey events`: what a running key did, as text or JSON lines (authenticator/events.py).

The running key serves its events on its control socket as the streaming operation
``subscribe`` (transports/control.py streams; registered by `softkey run`, tools/run.py)::

    {"op": "subscribe", "since": 0, "follow": true}
    -> {"ok": true, "seq": 7, "follow": true}      the reply; seq: the last event so far
    -> {"event": {"type": "credentialAdded", "seq": 1, ...}}   the history after "since",
    -> {"event": {...}}                                        then each new event (follow)
    -> {"dropped": 3}         this reader was too slow: 3 events were skipped (queue full)
    -> {"end": true}          without follow, after the history; the key then hangs up

The connection passes the control socket's SO_PEERCRED checks like any other: only the key's
own user can subscribe. tools/cli.py registers the verb on the `softkey` group.
"""

from __future__ import annotations

import json
import queue
import sys
from pathlib import Path
from typing import Any

import click

from softkey.authenticator.events import EventBus
from softkey.tools import paths
from softkey.transports import control
from softkey.transports.display import printable

QUEUE_LIMIT = 10_000  # events a slow subscriber may fall behind before some are dropped
IDLE_CHECK = 0.25  # how often an idle stream looks whether its client is still there


def event_stream(bus: EventBus) -> control.StreamHandler:
    """The ``subscribe`` stream of a running key whose events are ``bus``."""

    def handler(request: dict[str, Any], out: control.Stream) -> None:
        since = request.get("since", 0)
        follow = request.get("follow", True)
        if isinstance(since, bool) or not isinstance(since, int) or since < 0:
            out.send({"ok": False, "error": '"since" must be an event seq (0 or more)'})
            return
        if not isinstance(follow, bool):
            out.send({"ok": False, "error": '"follow" must be true or false'})
            return
        pending: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=QUEUE_LIMIT)
        dropped = [0]

        def deliver(event: dict[str, Any]) -> None:  # in the key's worker: never blocks
            try:
                pending.put_nowait(event)
            except queue.Full:
                dropped[0] += 1

        # Subscribe before reading the history, so nothing falls between the two (an event in
        # both is sent once: by seq).
        unsubscribe = bus.subscribe(deliver) if follow else None
        try:
            last = since
            if not out.send({"ok": True, "seq": bus.last_seq, "follow": follow}):
                return
            for event in bus.history:
                if event["seq"] > last:
                    if not out.send({"event": event}):
                        return
                    last = event["seq"]
            if not follow:
                out.send({"end": True})
                return
            while out.open:
                try:
                    event = pending.get(timeout=IDLE_CHECK)
                except queue.Empty:
                    continue
                if dropped[0]:
                    count, dropped[0] = dropped[0], 0
                    if not out.send({"dropped": count}):
                        return
                if event["seq"] <= last:
                    continue
                last = event["seq"]
                if not out.send({"event": event}):
                    return
        finally:
            if unsubscribe is not None:
                unsubscribe()

    return handler


def describe(event: dict[str, Any]) -> str:
    """One line for a person: time, type, then the fields that are set (rp_id escaped: it is
    the request's own text)."""
    parts = [str(event.get("timestamp", "")), str(event.get("type", "?"))]
    if event.get("rp_id") is not None:
        parts.append(f"rp={printable(str(event['rp_id']))}")
    if event.get("credential_id") is not None:
        parts.append(f"credential={event['credential_id']}")
    if event.get("sign_count") is not None:
        parts.append(f"sign_count={event['sign_count']}")
    for name in ("purpose", "verdict", "change"):
        if event.get(name) is not None:
            parts.append(f"{name}={printable(str(event[name]))}")
    for name in ("resident", "up", "uv"):
        if name in event:
            parts.append(f"{name}={'yes' if event[name] else 'no'}")
    return " ".join(parts)


def not_running_message(ref: Any, what: str) -> str:
    """Why a verb for a running key cannot run: no such key, or it is not running."""
    if not ref.exists():
        return (
            f"there is no {ref.label} ({ref.state} does not exist); create it with "
            f"`softkey init{ref.key_option}` and start it with `softkey run{ref.key_option}`"
        )
    return f"{ref.label} is not running; {what}: start it with `softkey run{ref.key_option}`"


@click.command("events")
@paths.key_options
@click.option(
    "--follow",
    "-f",
    is_flag=True,
    help="Keep printing events as they happen, until Ctrl-C or the key stops.",
)
@click.option(
    "--since",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    metavar="SEQ",
    help="Only events after this one (the `seq` of an event printed before).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='One JSON object per line and event: "type", "seq", "timestamp", "rp_id", '
    '"credential_id" (base64url), "sign_count", ... and "key", "state", "running".',
)
def events(
    key_name: str | None, state_path: Path | None, follow: bool, since: int, as_json: bool
) -> None:
    """What the running key did: registrations, assertions, deletions, PIN changes, resets,
    touch requests. The key keeps its last 1000 events in memory (never secrets).

    Events are runtime state of a running key (`softkey run`); a key that is not running has
    none to show."""
    from softkey.tools.cli import CliError, resolve_key

    ref = resolve_key(key_name, state_path)
    sock = ref.socket()
    what = "events come from a running key"
    if sock is None:
        raise CliError(not_running_message(ref, what))
    try:
        lines = control.stream(sock, "subscribe", since=since, follow=follow)
        reply = next(lines)
    except control.NotRunning:
        raise CliError(not_running_message(ref, what)) from None
    except control.ControlError as exc:
        raise CliError(f"{exc}; is {ref.label} still running?") from None
    if not reply.get("ok"):
        error = str(reply.get("error") or "the key refused")
        if "unknown operation" in error:
            error = f"{ref.label} runs a softkey without events; restart it with this one"
        raise CliError(error)
    header = {"key": ref.name, "state": str(ref.state), "running": True}
    try:
        for line in lines:
            event = line.get("event")
            if isinstance(event, dict):
                if as_json:
                    click.echo(json.dumps({**header, **event}, sort_keys=True))
                else:
                    click.echo(describe(event))
                sys.stdout.flush()
            elif "dropped" in line:
                click.echo(
                    f"softkey: {line['dropped']} events were skipped: this reader fell behind",
                    err=True,
                )
            elif line.get("end"):
                break
    except KeyboardInterrupt:  # Ctrl-C ends a --follow: that is how it is stopped
        return
    except control.ControlError:
        return  # the key went away mid-stream: nothing more to show
