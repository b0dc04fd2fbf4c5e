"""The topic scheme (AWS IoT shadow and jobs topics, plus the fleet's own presence/telemetry).

Every component builds and parses topics here, from the prefixes in the settings, so a
broker that refuses ``$`` topics (amqtt) only needs a different ``shadow_prefix``.
"""

from __future__ import annotations

import re
from typing import NamedTuple

# AWS IoT: thing and shadow names are letters, digits, ':', '_' and '-'.
THING_NAME = re.compile(r"^[A-Za-z0-9:_-]{1,128}$")
SHADOW_NAME = re.compile(r"^[A-Za-z0-9:_-]{1,64}$")
SHADOW_OPS = ("update", "get", "delete")


# Tuples: one is parsed per message, and a frozen dataclass's __init__ costs a setattr per
# field.
class ShadowTopic(NamedTuple):
    thing: str
    name: str  # "" for the classic shadow
    op: str  # update | get | delete


class FleetTopic(NamedTuple):
    thing: str
    kind: str  # presence | telemetry


class JobsTopic(NamedTuple):
    thing: str
    job_id: str | None  # None for notify-next/start-next/get
    op: str  # start-next | get | update | notify-next | list


class Topics:
    """Builds and parses topics for one pair of prefixes."""

    def __init__(self, shadow_prefix: str = "$aws/things", fleet_prefix: str = "fleet") -> None:
        self.shadow_prefix = shadow_prefix.rstrip("/")
        self.fleet_prefix = fleet_prefix.rstrip("/")
        self._sp = self.shadow_prefix.split("/")
        self._fp = self.fleet_prefix.split("/")

    # ------------------------------------------------------------- subscriptions

    def service_subscriptions(self) -> list[str]:
        """What the shadow service listens to (requests and device reports)."""
        p, f = self.shadow_prefix, self.fleet_prefix
        subs = [f"{p}/+/shadow/{op}" for op in SHADOW_OPS]
        subs += [f"{p}/+/shadow/name/+/{op}" for op in SHADOW_OPS]
        subs += [f"{f}/+/presence", f"{f}/+/telemetry"]
        return subs

    def jobs_subscriptions(self) -> list[str]:
        p = self.shadow_prefix
        return [f"{p}/+/jobs/start-next", f"{p}/+/jobs/get", f"{p}/+/jobs/+/get",
                f"{p}/+/jobs/+/update"]

    # ------------------------------------------------------------------ building

    def shadow(self, thing: str, name: str = "", op: str = "update", suffix: str = "") -> str:
        base = f"{self.shadow_prefix}/{thing}/shadow"
        if name:
            base += f"/name/{name}"
        topic = f"{base}/{op}"
        return f"{topic}/{suffix}" if suffix else topic

    def jobs(self, thing: str, *parts: str) -> str:
        return "/".join([self.shadow_prefix, thing, "jobs", *parts])

    def presence(self, thing: str) -> str:
        return f"{self.fleet_prefix}/{thing}/presence"

    def telemetry(self, thing: str) -> str:
        return f"{self.fleet_prefix}/{thing}/telemetry"

    # ------------------------------------------------------------------- parsing

    def parse_shadow(self, topic: str) -> ShadowTopic | None:
        """A shadow request topic (``.../update``, ``.../get``, ``.../delete``), else None.

        The thing and shadow names are returned as they are; validate them with
        :func:`valid_thing` before use.
        """
        parts = topic.split("/")
        n = len(self._sp)
        if parts[:n] != self._sp or len(parts) < n + 3 or parts[n + 1] != "shadow":
            return None
        rest = parts[n + 2:]
        if len(rest) == 1 and rest[0] in SHADOW_OPS:
            return ShadowTopic(parts[n], "", rest[0])
        if len(rest) == 3 and rest[0] == "name" and rest[2] in SHADOW_OPS:
            return ShadowTopic(parts[n], rest[1], rest[2])
        return None

    def parse_fleet(self, topic: str) -> FleetTopic | None:
        parts = topic.split("/")
        n = len(self._fp)
        if parts[:n] != self._fp or len(parts) != n + 2:
            return None
        if parts[n + 1] not in ("presence", "telemetry"):
            return None
        return FleetTopic(parts[n], parts[n + 1])

    def parse_jobs(self, topic: str) -> JobsTopic | None:
        parts = topic.split("/")
        n = len(self._sp)
        if parts[:n] != self._sp or len(parts) < n + 3 or parts[n + 1] != "jobs":
            return None
        rest = parts[n + 2:]
        if rest in (["start-next"], ["get"], ["notify-next"]):
            return JobsTopic(parts[n], None, rest[0])
        if len(rest) == 2 and rest[1] in ("get", "update"):
            return JobsTopic(parts[n], rest[0], rest[1])
        return None


def valid_thing(name: str) -> bool:
    return bool(THING_NAME.fullmatch(name))  # fullmatch: "$" would accept "a\n"


def valid_shadow_name(name: str) -> bool:
    return name == "" or bool(SHADOW_NAME.fullmatch(name))
