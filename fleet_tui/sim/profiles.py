"""Failure profiles: deliberate, reproducible misbehaviour for demos and tests.

``--profile NAME[=PARAM][:SHARE]`` (repeatable; ``--profile none`` for none). SHARE is the
fraction of devices that get the profile (default 1: all). Which devices get a profile
depends only on the seed, the thing name and the profile's name
(``random.Random(f"{seed}/{thing}/{name}")``), so adding a profile never reshuffles the
others, and a device's behaviour is drawn from ``random.Random(f"{seed}/{thing}")``.

============== ======================= ===========================================
name           PARAM                   behaviour
============== ======================= ===========================================
flaky          mean seconds (90)       drops its link at random (exponential gaps),
                                       stays offline 1-15 s, reconnects
crash-loop     VERSION[/HWREV]         an update to VERSION (any version when
                                       omitted) crash-loops at boot on HWREV (any
                                       when omitted): 3 crashes, then rollback
slow-download  bytes/s (64-256 drawn)  OTA downloads trickle at that rate
failing-download                       OTA downloads break off after 1 KiB
bad-sensor                             temp_c mostly reads 95-125 degC outliers
memory-leak    bytes/s (150-400 drawn) heap_free falls with uptime; panics (reboot,
                                       reset_reason "panic") when it runs out
strict-config                          also refuses ``telemetry_interval_s`` as an
                                       unknown key (unknown keys always are)
============== ======================= ===========================================
"""

from __future__ import annotations

import random
from dataclasses import dataclass

PROFILES = ("flaky", "crash-loop", "slow-download", "failing-download", "bad-sensor",
            "memory-leak", "strict-config")


class ProfileError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class ProfileSpec:
    name: str
    share: float = 1.0
    param: str | None = None


def parse_profile(text: str) -> ProfileSpec | None:
    """``NAME[=PARAM][:SHARE]`` -> spec; ``none`` -> None."""
    raw = text.strip()
    if raw == "none":
        return None
    share = 1.0
    head, sep, tail = raw.rpartition(":")
    if sep:
        try:
            share = float(tail)
        except ValueError:
            raise ProfileError(f"profile {text!r}: share {tail!r} is not a number") from None
        raw = head
    if not 0.0 <= share <= 1.0:
        raise ProfileError(f"profile {text!r}: share must be between 0 and 1")
    name, eq, param = raw.partition("=")
    if name not in PROFILES:
        raise ProfileError(f"unknown profile {name!r}; expected one of {', '.join(PROFILES)}"
                           " or none")
    if eq and not param:
        raise ProfileError(f"profile {text!r}: empty parameter")
    if name in ("flaky", "slow-download", "memory-leak") and eq:
        try:
            if float(param) <= 0:
                raise ValueError
        except ValueError:
            raise ProfileError(f"profile {text!r}: parameter must be a positive number") from None
    if name in ("failing-download", "bad-sensor", "strict-config") and eq:
        raise ProfileError(f"profile {name!r} takes no parameter")
    return ProfileSpec(name, share, param if eq else None)


def parse_profiles(texts: list[str] | None) -> list[ProfileSpec]:
    specs: list[ProfileSpec] = []
    saw_none = False
    for text in texts or []:
        spec = parse_profile(text)
        if spec is None:
            saw_none = True
        else:
            specs.append(spec)
    if saw_none and specs:
        raise ProfileError("--profile none cannot be combined with other profiles")
    return specs


@dataclass(frozen=True, slots=True)
class DeviceProfile:
    """The misbehaviour of one device (all off by default)."""

    flaky_mean_s: float | None = None
    crash_loop: tuple[str | None, str | None] | None = None  # (version, hardware rev)
    download_bytes_per_s: float | None = None
    download_fail_after: int | None = None
    bad_sensor: bool = False
    leak_bytes_per_s: float | None = None
    strict_config: bool = False

    @property
    def names(self) -> list[str]:
        out = []
        if self.flaky_mean_s is not None:
            out.append("flaky")
        if self.crash_loop is not None:
            out.append("crash-loop")
        if self.download_bytes_per_s is not None:
            out.append("slow-download")
        if self.download_fail_after is not None:
            out.append("failing-download")
        if self.bad_sensor:
            out.append("bad-sensor")
        if self.leak_bytes_per_s is not None:
            out.append("memory-leak")
        if self.strict_config:
            out.append("strict-config")
        return out

    def crashes(self, version: str, hardware_rev: str) -> bool:
        if self.crash_loop is None:
            return False
        want_version, want_hw = self.crash_loop
        return ((want_version is None or want_version == version)
                and (want_hw is None or want_hw == hardware_rev))


NO_PROFILE = DeviceProfile()


def assign(specs: list[ProfileSpec], seed: int | str, thing: str) -> DeviceProfile:
    """The profiles one device gets: deterministic in (seed, thing, profile name)."""
    if not specs:
        return NO_PROFILE
    values: dict[str, object] = {}
    for spec in specs:
        pick = random.Random(f"{seed}/{thing}/{spec.name}")
        if pick.random() >= spec.share:
            continue
        if spec.name == "flaky":
            values["flaky_mean_s"] = float(spec.param) if spec.param else 90.0
        elif spec.name == "crash-loop":
            version, hw = None, None
            if spec.param:
                v, _, h = spec.param.partition("/")
                version, hw = v or None, h or None
            values["crash_loop"] = (version, hw)
        elif spec.name == "slow-download":
            values["download_bytes_per_s"] = (
                float(spec.param) if spec.param else round(pick.uniform(64, 256)))
        elif spec.name == "failing-download":
            values["download_fail_after"] = 1024
        elif spec.name == "bad-sensor":
            values["bad_sensor"] = True
        elif spec.name == "memory-leak":
            values["leak_bytes_per_s"] = (
                float(spec.param) if spec.param else round(pick.uniform(150, 400)))
        elif spec.name == "strict-config":
            values["strict_config"] = True
    return DeviceProfile(**values) if values else NO_PROFILE  # type: ignore[arg-type]
