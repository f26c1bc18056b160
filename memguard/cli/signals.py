"""Signals for memguard's long commands (`run`, `demo`, `fake init`): stop tidily or
ignore, never die of a default action.

The default action of SIGHUP (a closed ssh session sends it), SIGQUIT, SIGUSR1,
SIGUSR2 and SIGALRM ends a process at once: no log line, no cleanup - `memguard
run --hold-at-limit` left every guarded container at oom_kill_disable 1 and its
status socket behind. So a command installs these handlers first thing, and they
stay until the process exits:

  STOP_SIGNALS     SIGTERM SIGINT SIGHUP SIGQUIT: the first asks the command to
                   stop ("received SIGHUP: shutting down"); later ones are said
                   once per name ("received SIGTERM again: already shutting
                   down") and otherwise ignored: nothing cuts a stop short.
  IGNORED_SIGNALS  SIGUSR1 SIGUSR2 SIGALRM: "received SIGUSR1: ignored", once per
                   name.

A SIGHUP that was ignored when the process started (nohup) stays ignored.

Rules kept here:
- Installed once, never restored: from install() to exit there is no moment at
  which one of these signals takes its default action (close(), at the very
  end, ignores them: the interpreter's own teardown restores SIG_DFL). (trio.open_signal_receiver,
  used before, has two such moments: until its block is entered - all of
  start-up - and after it exits, when it restores the previous handlers and
  re-raises what it still held, so a second signal during shutdown arrived under
  the default action and ended memguard half way through its cleanup.)
- A Python signal handler runs on the main thread between two bytecodes, maybe
  in the middle of trio's own bookkeeping: it only records the signal (one dict
  store) and, when a trio run is attached, asks it to look with
  TrioToken.run_sync_soon, the one trio call that is safe in a signal handler.
  What a signal means is decided in the trio thread (deliver()), where
  cancelling a scope is allowed.
- A signal that arrives with no trio run attached (before trio.run, after it, in
  a command without trio) waits in the record until a run attaches or the
  command calls deliver().
- A signal arriving while one of its kind is still unread merges with it (as the
  kernel merges standard signals): a storm costs one entry per kind, never memory.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections import OrderedDict
from collections.abc import Callable, Iterator
from types import FrameType

import trio

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
IGNORED_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM)


def _log_info(line: str) -> None:
    log.info("%s", line)


class Signals:
    """This process's handlers for STOP_SIGNALS and IGNORED_SIGNALS (module docstring).

    say(line) tells the user what arrived (a log line by default: called in the trio
    thread, it must not raise); `stopping` ends the first stop signal's line."""

    def __init__(
        self, say: Callable[[str], None] = _log_info, stopping: str = "shutting down"
    ) -> None:
        self._say = say
        self._stopping = stopping
        self._unread: OrderedDict[int, None] = OrderedDict()
        self._said: set[str] = set()
        self._token: trio.lowlevel.TrioToken | None = None
        self._on_stop: Callable[[], None] | None = None
        self._stop_signal: signal.Signals | None = None

    def install(self) -> Signals:
        """Handle both lists' signals from now until the process exits (main thread
        only), then unblock them: one blocked since exec would else wait for ever
        (and a pending one arrives now, handled). A SIGHUP ignored since the start
        (nohup) stays ignored: the one who started memguard asked for that."""
        for signum in (*STOP_SIGNALS, *IGNORED_SIGNALS):
            if signum == signal.SIGHUP and signal.getsignal(signum) == signal.SIG_IGN:
                continue
            signal.signal(signum, self._record)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, (*STOP_SIGNALS, *IGNORED_SIGNALS))
        return self

    def close(self) -> None:
        """Ignore them all from now to exit (after the last deliver()): Python's
        finalization puts the handlers it set back to SIG_DFL, but leaves SIG_IGN,
        so a signal arriving while the process ends cannot change its exit code."""
        for signum in (*STOP_SIGNALS, *IGNORED_SIGNALS):
            signal.signal(signum, signal.SIG_IGN)

    @property
    def stop_signal(self) -> signal.Signals | None:
        """The first stop signal delivered, None while none was."""
        return self._stop_signal

    @property
    def exit_code(self) -> int:
        """128 + the stop signal's number (the shell's code for a death by that
        signal), 0 when none was delivered."""
        return 0 if self._stop_signal is None else 128 + self._stop_signal.value

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self._unread[signum] = None
        token = self._token
        if token is not None:
            # The token is dropped before the run ends (attached()); should the run
            # end first anyway, the signal stays recorded for deliver().
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self.deliver, idempotent=True)

    @contextlib.contextmanager
    def attached(self, on_stop: Callable[[], None]) -> Iterator[None]:
        """Inside a trio run: deliver signals as they come, the first stop signal by
        calling on_stop() in the trio thread (synchronous: e.g. a scope's cancel or an
        agent's stop). A stop delivered before entry calls on_stop() at once, and the
        signals recorded before entry are delivered at once."""
        self._on_stop = on_stop
        self._token = trio.lowlevel.current_trio_token()
        try:
            if self._stop_signal is not None:
                on_stop()
            self.deliver()
            yield
        finally:
            self._token = None
            self._on_stop = None

    def deliver(self) -> None:
        """Say, and act on, every signal recorded and not yet delivered."""
        while self._unread:
            signum, _ = self._unread.popitem(last=False)
            self._deliver_one(signal.Signals(signum))

    def _deliver_one(self, signum: signal.Signals) -> None:
        name = signum.name
        if signum in IGNORED_SIGNALS:
            self._say_once(name, f"received {name}: ignored")
        elif self._stop_signal is None:
            self._stop_signal = signum
            self._say(f"received {name}: {self._stopping}")
            if self._on_stop is not None:
                self._on_stop()
        else:
            self._say_once(f"{name} again", f"received {name} again: already shutting down")

    def _say_once(self, key: str, line: str) -> None:
        if key not in self._said:
            self._said.add(key)
            self._say(line)
