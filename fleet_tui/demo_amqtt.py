"""``python -m fleet_tui.demo_amqtt PORT``: the demo's amqtt broker in its own process (pure
Python: in the console's process it would compete with the UI and the service for the GIL).
Stops cleanly on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys


async def serve(host: str, port: int) -> None:
    from amqtt.broker import Broker

    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                    {"allow_anonymous": True}},
    }
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    broker = Broker(config)
    await broker.start()
    await stop.wait()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(broker.shutdown(), 5)


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.ERROR)
    host, port = (argv[1], int(argv[2])) if len(argv) > 2 else ("127.0.0.1", int(argv[1]))
    asyncio.run(serve(host, port))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
