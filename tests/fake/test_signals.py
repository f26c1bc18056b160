"""memguard.cli.signals in this process: real signals, the handlers memguard installs.

Each test installs memguard's handlers for real (signal.raise_signal runs a Python
handler before it returns) and puts the test process's handlers and signal mask
back afterwards.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest
import trio

from memguard.cli.signals import IGNORED_SIGNALS, STOP_SIGNALS, Signals
from testing.waits import bounded

HANDLED = (*STOP_SIGNALS, *IGNORED_SIGNALS)


@pytest.fixture(autouse=True)
def _restored_signals() -> Iterator[None]:
    handlers = {signum: signal.getsignal(signum) for signum in HANDLED}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    try:
        yield
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def test_the_first_stop_signal_stops_later_ones_are_said_once_and_ignored() -> None:
    said: list[str] = []
    signals = Signals(said.append).install()
    for signum in (signal.SIGUSR1, signal.SIGUSR1, signal.SIGINT, signal.SIGTERM, signal.SIGALRM):
        signal.raise_signal(signum)
    assert said == []  # recorded only: a handler decides nothing
    signals.deliver()
    assert said == [
        "received SIGUSR1: ignored",
        "received SIGINT: shutting down",
        "received SIGTERM again: already shutting down",
        "received SIGALRM: ignored",
    ]
    assert signals.stop_signal is signal.SIGINT
    assert signals.exit_code == 130
    for signum in (signal.SIGINT, signal.SIGUSR1, signal.SIGQUIT, signal.SIGINT, signal.SIGUSR2):
        signal.raise_signal(signum)
        signals.deliver()
    assert said[4:] == [
        "received SIGINT again: already shutting down",
        "received SIGQUIT again: already shutting down",
        "received SIGUSR2: ignored",
    ]
    assert signals.stop_signal is signal.SIGINT


@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=lambda signum: signum.name)
def test_every_stop_signal_stops_with_its_exit_code(signum: signal.Signals) -> None:
    said: list[str] = []
    signals = Signals(said.append, "stopping").install()
    assert signals.exit_code == 0
    signal.raise_signal(signum)
    signals.deliver()
    assert said == [f"received {signum.name}: stopping"]
    assert signals.exit_code == 128 + signum.value


async def test_a_stop_while_attached_reaches_the_trio_run() -> None:
    said: list[str] = []
    again = trio.Event()

    def say(line: str) -> None:  # called in the trio thread: may set an Event
        said.append(line)
        if "again" in line:
            again.set()

    signals = Signals(say).install()
    stopped = trio.Event()
    with signals.attached(stopped.set):
        signal.raise_signal(signal.SIGHUP)
        await bounded(stopped.wait(), "on_stop called after SIGHUP")
        signal.raise_signal(signal.SIGTERM)
        await bounded(again.wait(), "the second stop signal said")
    assert said == [
        "received SIGHUP: shutting down",
        "received SIGTERM again: already shutting down",
    ]


async def test_a_stop_before_the_run_stops_it_as_it_attaches() -> None:
    said: list[str] = []
    signals = Signals(said.append).install()
    signal.raise_signal(signal.SIGQUIT)  # before trio: recorded, waiting
    calls: list[str] = []
    with signals.attached(lambda: calls.append("stop")):
        assert calls == ["stop"]  # at once, before the first checkpoint
        assert said == ["received SIGQUIT: shutting down"]
    signals.deliver()
    assert calls == ["stop"]


async def test_a_stop_delivered_before_the_run_stops_it_as_it_attaches() -> None:
    signals = Signals(lambda line: None).install()
    signal.raise_signal(signal.SIGTERM)
    signals.deliver()  # outside any run: nothing to stop yet
    calls: list[str] = []
    with signals.attached(lambda: calls.append("stop")):
        assert calls == ["stop"]


def test_a_signal_blocked_since_exec_is_unblocked_and_handled() -> None:
    said: list[str] = []
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR2, signal.SIGTERM])
    signal.raise_signal(signal.SIGUSR2)  # pending: blocked
    signals = Signals(said.append).install()
    assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    signals.deliver()
    assert said == ["received SIGUSR2: ignored"]


def test_a_sighup_ignored_from_the_start_stays_ignored() -> None:
    """nohup: the one who started it asked for SIGHUP to be ignored."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    said: list[str] = []
    signals = Signals(said.append).install()
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN)
    signal.raise_signal(signal.SIGHUP)
    signals.deliver()
    assert said == []
    assert signals.stop_signal is None
