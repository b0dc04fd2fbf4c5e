"""A shadow load generator that behaves like a fleet of devices under the retry contract
(docs/scale-out.md): each thing has one update in flight; an update that gets no answer
within ``retry_s``, or a 500, is sent again with the same clientToken and payload."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
import orjson

from fleet_tui.service.topics import Topics


@dataclass
class LoadResult:
    # token -> every answer it got: ("accepted", version) or ("rejected", code)
    answers: dict[str, list[tuple[str, int]]] = field(default_factory=lambda: defaultdict(list))
    sent: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # per thing
    retried: set[str] = field(default_factory=set)
    unanswered: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def accepted(self) -> int:
        """Updates of this load (not other clients' tokens) that got an accepted answer."""
        return sum(1 for tokens in self.sent.values() for t in tokens
                   if any(k == "accepted" for k, _ in self.answers.get(t, ())))


async def run_load(host: str, port: int, things: list[str], stop: asyncio.Event, *,
                   topics: Topics | None = None, retry_s: float = 2.0, max_tries: int = 15,
                   pause_s: float = 0.0, client_id: str = "shadow-load") -> LoadResult:
    """Send updates until ``stop``; every thing finishes its update in flight first."""
    t = topics or Topics()
    result = LoadResult()
    waiting: dict[str, asyncio.Future[tuple[str, int]]] = {}
    async with aiomqtt.Client(host, port, identifier=client_id, max_inflight_messages=1000,
                              socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
                              ) as c:
        await c.subscribe(t.shadow("+", "", "update", "accepted"), qos=1)
        await c.subscribe(t.shadow("+", "", "update", "rejected"), qos=1)

        async def read() -> None:
            async for m in c.messages:
                body: Any = orjson.loads(m.payload)  # type: ignore[arg-type]
                token = body.get("clientToken") if isinstance(body, dict) else None
                if not isinstance(token, str):
                    continue
                answer = (("accepted", int(body.get("version", -1)))
                          if m.topic.value.endswith("/accepted")
                          else ("rejected", int(body.get("code", 0))))
                result.answers[token].append(answer)
                fut = waiting.get(token)
                if fut is not None and not fut.done():
                    fut.set_result(answer)

        async def device(thing: str) -> None:
            i = 0
            while not stop.is_set():
                token = f"{thing}-{i}"
                payload = orjson.dumps({"state": {"desired": {"seq": i}}, "clientToken": token})
                result.sent[thing].append(token)
                for attempt in range(max_tries):
                    fut: asyncio.Future[tuple[str, int]] = \
                        asyncio.get_running_loop().create_future()
                    waiting[token] = fut
                    if attempt:
                        result.retried.add(token)
                    await c.publish(t.shadow(thing), payload, qos=1)
                    try:
                        kind, code = await asyncio.wait_for(fut, retry_s)
                    except TimeoutError:
                        continue
                    if kind == "accepted" or code < 500:
                        break
                else:
                    result.unanswered.append(token)
                waiting.pop(token, None)
                i += 1
                if pause_s:
                    await asyncio.sleep(pause_s)

        reader = asyncio.create_task(read())
        t0 = time.perf_counter()
        await asyncio.gather(*(device(th) for th in things))
        result.elapsed_s = time.perf_counter() - t0
        await asyncio.sleep(retry_s)  # late duplicates, if any, are counted too
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    return result
