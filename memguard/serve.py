"""`memguard run`: the agent under trio, stopped cleanly by SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import signal

import trio

from memguard.agent import Agent, AgentConfig, raise_fd_limit
from memguard.log_sink import LogSink
from memguard.logsetup import configure

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


def serve(config: AgentConfig, log_format: str, log_level: str) -> int:
    configure(log_format, log_level)
    agent = Agent(config, [LogSink()])  # raises ConfigError before anything starts
    raise_fd_limit()
    trio.run(serve_async, agent)
    return 0
