"""`memguard run`: logging, the composition root, trio, signals, exit codes.

Installs its signal handlers first (memguard.cli.signals: SIGTERM, SIGINT,
SIGHUP and SIGQUIT stop it cleanly, SIGUSR1, SIGUSR2 and SIGALRM are ignored,
from the first line of serve() to exit), raises its own priority (before any
thread starts: memguard.cli.priority), composes the agent
(memguard.cli.compose), runs it and the endpoints under trio. A stop signal
during start-up stops the agent as soon as it is composed; one during the stop
is said and ignored. A clean stop is exit 0, whichever signal asked for it. The
one failure that stops it on its own (FatalError: the parent's filesystem is
gone) becomes one line and exit 1 in memguard.cli.main.
"""

from __future__ import annotations

import logging

import trio

from memguard.cli.compose import compose, raise_fd_limit, select_backend, with_http_reserve
from memguard.cli.config import RunConfig
from memguard.cli.logsetup import NonBlockingHandler, configure
from memguard.cli.priority import Step, raise_priority, report
from memguard.cli.signals import Signals
from memguard.components import fatal_in, supervise
from memguard.guarding.agent import Agent

log = logging.getLogger(__name__)


class StopRequest:
    """A stop signal's way to the agent, which may not be composed yet."""

    def __init__(self) -> None:
        self.requested = False
        self._agent: Agent | None = None

    def __call__(self) -> None:
        self.requested = True
        if self._agent is not None:
            self._agent.stop()

    def composed(self, agent: Agent) -> None:
        """The agent now exists: stop it at once if a stop came during start-up."""
        self._agent = agent
        if self.requested:
            agent.stop()


async def _main(
    config: RunConfig,
    log_handler: NonBlockingHandler,
    priority: tuple[Step, ...],
    signals: Signals,
) -> None:
    stop = StopRequest()
    with signals.attached(stop):
        composed = await compose(config, log_handler)
        report(priority)  # once composed: a bad flag is one line and exit 2, alone
        stop.composed(composed.agent)
        async with trio.open_nursery() as endpoint:
            if composed.server is not None:
                await endpoint.start(supervise, "http", composed.server.run, composed.agent.status)
            if composed.status is not None:
                await endpoint.start(
                    supervise, "status-socket", composed.status.run, composed.agent.status
                )
            await composed.agent.run()
            endpoint.cancel_scope.cancel()


def serve(config: RunConfig) -> int:
    signals = Signals().install()  # first: from here to exit no signal ends memguard untidily
    try:
        _serve(config, signals)
    finally:
        signals.close()  # the process's end: a late signal cannot change its exit code
    return 0


def _serve(config: RunConfig, signals: Signals) -> None:
    agent = config.agent  # exit 2 early:
    select_backend(agent.parent, config.cgroup_version, config.v2, layout=config.layout)
    # Before the first thread (the log writer): nice is per thread, inherited at creation.
    steps = raise_priority(config.priority)
    log_handler = configure(config.log_format, config.log_level, queue_lines=config.log_queue)
    try:
        config = with_http_reserve(config, raise_fd_limit())
        try:
            trio.run(_main, config, log_handler, steps, signals)
        except BaseExceptionGroup as group:
            fatal = fatal_in(group)
            if fatal is None:
                raise
            raise fatal from None
    finally:
        signals.deliver()  # what arrived after the run: said before the log closes
        log_handler.close()
