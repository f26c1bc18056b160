"""`memguard run`: logging, the composition root, trio, signals, exit codes.

Raises its own priority first (memguard.cli.priority, before any thread
starts), composes the agent (memguard.cli.compose), runs it and the health
endpoint under trio, and stops cleanly on SIGTERM or SIGINT. The one failure that stops
it on its own (FatalError: the parent's filesystem is gone) becomes one line
and exit 1 in memguard.cli.main.
"""

from __future__ import annotations

import logging
import signal

import trio

from memguard.cli.compose import compose, raise_fd_limit, select_backend, with_http_reserve
from memguard.cli.config import RunConfig
from memguard.cli.logsetup import NonBlockingHandler, configure
from memguard.cli.priority import Step, raise_priority, report
from memguard.components import fatal_in, supervise
from memguard.guarding.agent import Agent

log = logging.getLogger(__name__)


async def serve_async(agent: Agent) -> None:
    async with trio.open_nursery() as nursery:
        # Listen before the agent starts, so an early SIGTERM is not lost.
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:

            async def stop_on_signal() -> None:
                async for signum in signals:
                    log.info("received %s: shutting down", signal.Signals(signum).name)
                    agent.stop()
                    return

            nursery.start_soon(stop_on_signal)
            await agent.run()
            nursery.cancel_scope.cancel()


async def _main(
    config: RunConfig, log_handler: NonBlockingHandler, priority: tuple[Step, ...]
) -> None:
    composed = await compose(config, log_handler)
    report(priority)  # once composed: a bad flag is one line and exit 2, alone
    async with trio.open_nursery() as endpoint:
        if composed.server is not None:
            await endpoint.start(supervise, "http", composed.server.run, composed.agent.status)
        if composed.status is not None:
            await endpoint.start(
                supervise, "status-socket", composed.status.run, composed.agent.status
            )
        await serve_async(composed.agent)
        endpoint.cancel_scope.cancel()


def serve(config: RunConfig) -> int:
    agent = config.agent  # exit 2 early:
    select_backend(agent.parent, config.cgroup_version, config.v2, layout=config.layout)
    # Before the first thread (the log writer): nice is per thread, inherited at creation.
    steps = raise_priority(config.priority)
    log_handler = configure(config.log_format, config.log_level, queue_lines=config.log_queue)
    try:
        config = with_http_reserve(config, raise_fd_limit())
        try:
            trio.run(_main, config, log_handler, steps)
        except BaseExceptionGroup as group:
            fatal = fatal_in(group)
            if fatal is None:
                raise
            raise fatal from None
    finally:
        log_handler.close()
    return 0
