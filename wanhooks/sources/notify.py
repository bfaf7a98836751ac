"""`wanhooks notify`: what a dispatcher hook's event does, in each mode (issue #14).

The hooks (dispatcher.d/90-wanhooks, networkd/90-wanhooks) run `wanhooks notify` in
the background for every event they forward.  Then:

* a daemon answers the control socket: it is told, and does the rest (in either mode);
* a daemon holds its lifelong lock but does not answer (busy, or stopped with SIGSTOP):
  nothing -- a one-shot apply beside it would undo what only it knows (health verdicts,
  held gateways, the admin's overrides);
* no daemon, `mode: daemon` (the default): nothing.  `systemctl stop wanhooks` means
  stop: not even a DHCP renewal brings an apply.  One line in the journal says so;
* no daemon, `mode: hooks-only` (no resident process): a detached one-shot `wanhooks
  apply` whose output and errors go to the journal (`journalctl -t wanhooks`);
* the config does not load: which mode it asks for is unknown, so nothing happens but
  the error, in the journal.

Where lines go.  notify's own lines, and the apply's stdout (priority info) and stderr
(err), go to journald's stream socket, as systemd-cat sends them (sd_journal_stream_fd(3):
a header of identifier, empty unit id, priority, level prefix and three forward flags,
then one entry per line); the apply is handed the two connections as its stdout and
stderr, so nothing of wanhooks stays behind to relay.  Without a journal: syslog
(/dev/log, facility daemon), relayed line by line by this process, which then waits for
the apply; without either: this process's stderr (the hook keeps it for that case).

Coalescing.  Applies already take turns on the run lock; a burst of events (a link
flapping, a manager reconfiguring several links) must not also queue one apply per event.
Two flocks in the run dir keep it to one apply running and one waiting:

  apply.slot   held by the apply a hook started, from before it starts until it exits
               (its descriptor is the child's, inherited);
  apply.queue  held by the one notify waiting for that slot to start the next apply.

An event whose notify finds apply.queue held does nothing more: the waiting notify has
not yet started its apply, which will read the kernel after this event happened.  The
waiter lets go of apply.queue once it holds apply.slot, just before it starts the child,
so any later event queues the next apply (which then waits for this one to exit): no
event is ever followed only by an apply that read the kernel before it.  The waiter waits
at most SLOT_WAIT_S: a hung apply must not fold every later event into a queue that never
moves.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import selectors
import socket
import stat
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence

from ..command import argv as wanhooks_argv
from ..config.load import ConfigError, load_config
from ..model import RunMode
from ..plan.names import printable_line
from ..service import control
from ..service.lock import RunDirError, daemon_present, trusted_run_dir

JOURNAL_STREAM = "/run/systemd/journal/stdout"  # journald's stream socket; tests use their own
SYSLOG_SOCKET = "/dev/log"
IDENTIFIER = "wanhooks"
FACILITY_DAEMON = 3
ERR, WARNING, NOTICE, INFO, DEBUG = 3, 4, 5, 6, 7
CONNECT_TIMEOUT = 1.0  # journald or syslog not accepting within this: treated as absent

SLOT_FILE = "apply.slot"
QUEUE_FILE = "apply.queue"
# An apply takes well under a second; one still running after this is stuck (it waits on the
# run lock another holds, or nft hangs): the event that waited for it gives up, said in the
# journal, and the next event tries again.
SLOT_WAIT_S = 60.0

# What a child of wanhooks runs with: nothing of the caller's environment or directory.
CHILD_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}


def notify(config_path: str, run_dir: str, source: str, action: str, iface: str | None) -> int:
    """Forward one hook event; what happens without a daemon depends on the config's mode.
    Exit code: 0 done (or rightly nothing), 1 the run dir or a spawn failed, 2 bad config
    or a request the daemon refused."""
    event = " ".join(part for part in (source, action, iface) if part)
    try:
        return _notify(config_path, run_dir, source, action, iface, event)
    except Exception:  # a hook's stderr is often /dev/null: the journal is where it is seen
        for line in traceback.format_exc().splitlines():
            log(ERR, f"notify failed ({event}): {line}")
        return 1


def _notify(config_path: str, run_dir: str, source: str, action: str, iface: str | None, event: str) -> int:
    message = {"op": "notify", "source": source, "iface": iface or "", "action": action}
    try:
        answer = control.request(run_dir, message, timeout=2.0)
    except control.ControlError as err:
        if daemon_present(run_dir):
            # busy, not gone: it follows the kernel itself, and a one-shot apply beside it
            # would undo what only it knows (health, held gateways, the admin's overrides)
            log(WARNING, f"the daemon did not answer ({err}); not applying: {event}")
            return 0
        return _without_daemon(config_path, run_dir, event)
    if not answer.get("ok"):
        log(ERR, f"the daemon refused {event}: {answer.get('error')}")
        return 2
    return 0


def _without_daemon(config_path: str, run_dir: str, event: str) -> int:
    try:
        config = load_config(config_path)
    except ConfigError as err:
        log(ERR, f"no daemon running, and the config that says what to do does not load: {err}; "
                 f"event ignored: {event}")  # fmt: skip
        return 2
    if config.mode is not RunMode.HOOKS_ONLY:
        log(INFO, f"no daemon running: event ignored (mode: {config.mode.value}): {event}")
        return 0
    argv = [
        *wanhooks_argv(), "-c", os.path.abspath(config_path), "--run-dir", os.path.abspath(run_dir), "apply",
    ]  # fmt: skip
    try:
        apply_soon(run_dir, argv, event)
    except (RunDirError, OSError) as err:
        log(ERR, f"no apply for {event}: {err}")
        return 1
    return 0


def apply_soon(run_dir: str, argv: Sequence[str], event: str) -> bool:
    """Start argv (an apply) detached, unless one already waits to start (module docstring).
    True when this call started it."""
    trusted_run_dir(run_dir)  # root's and 0700, or refused: the lock files are made in it
    queue = _open_lock(run_dir, QUEUE_FILE)
    try:
        try:
            fcntl.flock(queue, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(DEBUG, f"an apply is about to start and will see this change: {event}")
            return False
        slot = _open_lock(run_dir, SLOT_FILE)
        try:
            if not _wait_for_slot(slot):  # the apply a hook started before this one has exited
                log(ERR, f"the apply started for an earlier event still runs after {SLOT_WAIT_S:g} s: "
                         f"not starting another for {event}")  # fmt: skip
                return False
            os.close(queue)  # from here on, an event queues an apply of its own
            queue = -1
            log(INFO, f"no daemon running (mode: hooks-only): applying for {event}")
            start_detached(argv, slot)
        finally:
            os.close(slot)  # the child holds the slot now, until it exits
    finally:
        if queue >= 0:
            os.close(queue)
    return True


def _wait_for_slot(slot: int) -> bool:
    """Take the slot, waiting at most SLOT_WAIT_S: an apply that hangs must not leave every
    later event folded into a queue that never moves."""
    deadline = time.monotonic() + SLOT_WAIT_S
    while True:
        try:
            fcntl.flock(slot, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)


def _open_lock(run_dir: str, name: str) -> int:
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW  # no planted link is followed
    return os.open(os.path.join(run_dir, name), flags, 0o600)


def start_detached(argv: Sequence[str], slot: int = -1) -> None:
    """Run argv in a session of its own, in / with CHILD_ENV, its stdout and stderr in the
    journal (else syslog, relayed by this process until it exits; else our stderr).  `slot`
    (a descriptor) stays open in the child for its whole life."""
    keep = (slot,) if slot >= 0 else ()
    out, err = journal_stream(INFO), journal_stream(ERR)
    if out is not None and err is not None:
        with out, err:
            _popen(argv, out.fileno(), err.fileno(), keep)
        return
    for sock in (out, err):
        if sock is not None:
            sock.close()
    if _is_socket(SYSLOG_SOCKET):
        _relay_to_syslog(_popen(argv, subprocess.PIPE, subprocess.PIPE, keep))
        return
    _popen(argv, sys.stderr.fileno(), sys.stderr.fileno(), keep)


def _popen(argv: Sequence[str], stdout: int, stderr: int, keep: tuple[int, ...]) -> subprocess.Popen[bytes]:
    # `-I` (in argv, or the package launcher's #!): neither the working directory nor PYTHON*
    # variables reach sys.path, so a `wanhooks.py` planted where the hook runs never runs as
    # root; the child starts in / with a clean environment all the same.
    return subprocess.Popen(
        list(argv), stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, pass_fds=keep,
        start_new_session=True, cwd="/", env=CHILD_ENV,
    )  # fmt: skip


def _relay_to_syslog(proc: subprocess.Popen[bytes]) -> None:
    """Each line the child writes, to syslog: stdout at info, stderr at err."""
    assert proc.stdout is not None and proc.stderr is not None
    priorities = {proc.stdout.fileno(): INFO, proc.stderr.fileno(): ERR}
    partial = dict.fromkeys(priorities, b"")
    with selectors.DefaultSelector() as selector:
        for fd in priorities:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            for key, _events in selector.select():
                chunk = os.read(key.fd, 65536)
                lines = (partial[key.fd] + chunk).split(b"\n")
                partial[key.fd] = lines.pop() if chunk else b""
                if not chunk:
                    selector.unregister(key.fd)
                for line in lines:
                    if line:
                        _emit_line(priorities[key.fd], line.decode("utf-8", "replace"), journal=False)
    proc.stdout.close()
    proc.stderr.close()
    proc.wait()


def log(priority: int, text: str) -> None:
    """One line of notify's own: the journal, else syslog, else stderr (and stderr too when
    it is a terminal: someone typed the command)."""
    line = printable_line(text)
    if not _emit_line(priority, line, journal=True) or _stderr_is_terminal():
        print(f"wanhooks notify: {line}", file=sys.stderr, flush=True)


def _emit_line(priority: int, line: str, journal: bool) -> bool:
    """To the journal (if asked) or syslog; False when neither took it (then stderr has it
    when this was a relayed line)."""
    line = printable_line(line)
    if journal:
        sock = journal_stream(priority)
        if sock is not None:
            with sock:
                try:
                    sock.sendall(line.encode("utf-8", "replace") + b"\n")
                    return True
                except OSError:
                    pass
    if syslog_send(priority, line):
        return True
    if not journal:
        print(line, file=sys.stderr, flush=True)
    return False


def _stderr_is_terminal() -> bool:
    try:
        return os.isatty(2)
    except OSError:
        return False


def stream_header(priority: int, identifier: str = IDENTIFIER) -> bytes:
    """journald's stream protocol header, as sd_journal_stream_fd(3) and systemd-cat send it:
    identifier, unit id (empty), priority, level prefix (1: a line may start with <N>), and
    forward to syslog, to kmsg, to the console (0 each), one per line."""
    return f"{identifier}\n\n{priority}\n1\n0\n0\n0\n".encode("ascii")


def journal_stream(priority: int) -> socket.socket | None:
    """A connection to journald whose every line becomes an entry at `priority`, identifier
    wanhooks; None without a journal."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(CONNECT_TIMEOUT)
        sock.connect(JOURNAL_STREAM)
        sock.shutdown(socket.SHUT_RD)  # as sd_journal_stream_fd: journald never answers
        sock.sendall(stream_header(priority))
        sock.settimeout(None)
    except OSError:
        sock.close()
        return None
    return sock


def syslog_send(priority: int, line: str) -> bool:
    """One syslog(3)-style datagram to /dev/log: `<PRI>wanhooks[pid]: line`."""
    message = f"<{FACILITY_DAEMON * 8 + priority}>{IDENTIFIER}[{os.getpid()}]: {line}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.sendto(message.encode("utf-8", "replace"), SYSLOG_SOCKET)
        except OSError:
            return False
    return True


def _is_socket(path: str) -> bool:
    with contextlib.suppress(OSError):
        return stat.S_ISSOCK(os.stat(path).st_mode)
    return False
