"""The simulator's device state machine: fed messages and time, checked on what it emits."""

from __future__ import annotations

import random
import weakref
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet_tui.domain.firmware_image import FirmwareImage
from fleet_tui.sim.device import (
    Action,
    Connect,
    Device,
    DeviceConfig,
    Download,
    DropConnection,
    Publish,
    Restart,
    Subscribe,
)
from fleet_tui.sim.profiles import DeviceProfile
from fleet_tui.sim.protocol import (
    SHADOW_ATTEMPTS_MAX,
    merge_reported,
    shadow_retry_seed,
    shadow_retry_wait_s,
)

THING = "esp32-000042"
P = f"$aws/things/{THING}"
IMAGES = {v: FirmwareImage.build(v) for v in ("2.3.0", "2.4.1")}
CRASHY = FirmwareImage.build("2.4.0", crash_on_hw="rev-b")


def make(hw: str = "rev-b", fw: str = "2.2.0", profile: DeviceProfile | None = None,
         **kw: Any) -> Device:
    cfg = DeviceConfig(THING, hw, fw, location="factory-C", **kw)
    return Device(cfg, rng=random.Random(f"7/{THING}"), profile=profile or DeviceProfile(),
                  wall_offset=1.7e9)


#: Devices whose shadow updates ``send`` answers with accepted at once, as a service would.
AUTO_ACCEPT: weakref.WeakSet[Device] = weakref.WeakSet()


def up(dev: Device, now: float = 0.0, *, auto_accept: bool = True) -> list[Action]:
    """Power on and connect; the service answers the get with an empty shadow and accepts
    the boot report (and, with ``auto_accept``, every later update as it is sent)."""
    assert dev.power_on(now) == [Connect()]
    actions = dev.on_connect(now)
    assert send(dev, now, "shadow/get/accepted", {"state": {"reported": {}}, "version": 1}) == []
    assert accept(dev, now) == []
    if auto_accept:
        AUTO_ACCEPT.add(dev)
    return actions


def accept(dev: Device, now: float) -> list[Action]:
    """The service accepts the device's shadow update in flight."""
    update = dev.update_in_flight
    if update is None:
        return []
    return dev.on_message(now, f"{P}/shadow/update/accepted", orjson.dumps(
        {"state": {}, "version": 1, "clientToken": update.token}))


def reject(dev: Device, now: float, code: int) -> list[Action]:
    update = dev.update_in_flight
    assert update is not None
    return dev.on_message(now, f"{P}/shadow/update/rejected", orjson.dumps(
        {"code": code, "message": "test", "clientToken": update.token}))


def pubs(actions: list[Action], suffix: str = "") -> list[Publish]:
    return [a for a in actions if isinstance(a, Publish) and a.topic.endswith(suffix)]


def reports(actions: list[Action]) -> list[dict[str, Any]]:
    return [p.json()["state"]["reported"] for p in pubs(actions, "/shadow/update")]


def send(dev: Device, now: float, suffix: str, doc: Any) -> list[Action]:
    payload = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    out = dev.on_message(now, f"{P}/{suffix}", payload)
    for _ in range(8):
        if dev not in AUTO_ACCEPT or dev.installing or dev.update_in_flight is None:
            break
        out += accept(dev, now)
    return out


def delta(dev: Device, now: float, state: dict[str, Any], version: int) -> list[Action]:
    return send(dev, now, "shadow/update/delta", {"state": state, "version": version})


def ota_state(image: FirmwareImage, url: str = "http://127.0.0.1:9/fw.bin") -> dict[str, Any]:
    return {"target_version": image.version, "ota_url": url, "ota_sha256": image.sha256}


def restart_and_boot(dev: Device, actions: list[Action], now: float) -> tuple[float, list[Action]]:
    """Follow Restart actions through crashes until the app connects."""
    while True:
        restart = [a for a in actions if isinstance(a, Restart)]
        assert restart, actions
        now += restart[0].delay_s
        actions = dev.boot(now)
        if actions == [Connect()]:
            return now, dev.on_connect(now)


# ------------------------------------------------------------------------- connect


def test_connect_sequence_matches_the_firmware() -> None:
    dev = make()
    actions = up(dev)
    assert isinstance(actions[0], Subscribe)
    assert actions[0].filters == (
        f"{P}/shadow/update/delta", f"{P}/shadow/update/accepted",
        f"{P}/shadow/update/rejected", f"{P}/shadow/get/accepted", f"{P}/shadow/get/rejected",
        f"{P}/jobs/notify-next", f"{P}/jobs/start-next/accepted",
        f"{P}/jobs/start-next/rejected", f"{P}/jobs/+/update/accepted",
        f"{P}/jobs/+/update/rejected")
    topics = [(p.topic, p.qos, p.retain) for p in pubs(actions)]
    assert topics == [
        (f"fleet/{THING}/presence", 1, True),
        (f"{P}/shadow/get", 1, False),
        (f"{P}/shadow/update", 1, False),
        (f"{P}/jobs/start-next", 1, False),
        (f"fleet/{THING}/telemetry", 0, False),
    ]
    presence, get, report, start_next, telemetry = (p.json() for p in pubs(actions))
    assert presence == {"state": "online", "firmware_version": "2.2.0", "hardware_rev": "rev-b",
                        "ts": 1_700_000_000}
    assert set(get) == {"clientToken"}
    assert report["state"]["reported"] == {
        "firmware_version": "2.2.0", "hardware_rev": "rev-b", "led_is_on": False,
        "telemetry_interval_s": 60, "tags": {"location": "factory-C"}, "ota_status": "idle",
        "ota_error": None, "target_version": None, "ota_url": None, "ota_sha256": None}
    assert report["clientToken"] != get["clientToken"]
    assert start_next == {"clientToken": start_next["clientToken"], "statusDetails": {}}
    assert set(telemetry) == {"ts", "uptime_s", "heap_free", "rssi", "cpu_pct", "temp_c",
                              "reset_reason", "errors"}
    assert telemetry["reset_reason"] == "poweron" and telemetry["errors"] == 0
    assert dev.will == (f"fleet/{THING}/presence", b'{"state":"offline"}')


def test_telemetry_every_interval_and_not_before() -> None:
    dev = make(telemetry_interval_s=10)
    up(dev)
    assert dev.next_wakeup() == 10.0
    assert dev.tick(9.9) == []
    (t,) = pubs(dev.tick(10.0), "/telemetry")
    assert t.json()["uptime_s"] == 10
    assert dev.next_wakeup() == 20.0


def test_reconnect_reports_everything_again() -> None:
    dev = make()
    up(dev)
    dev.on_disconnect(5.0)
    assert dev.tick(100.0) == []  # no telemetry while offline
    again = dev.on_connect(101.0)
    assert len(pubs(again, "/presence")) == 1 and len(reports(again)) == 1
    assert isinstance(again[0], Subscribe)


# ------------------------------------------------------------------------- deltas


def test_delta_applies_known_keys_and_reports_them() -> None:
    dev = make()
    up(dev)
    out = delta(dev, 1.0, {"led_is_on": True, "telemetry_interval_s": 5}, 3)
    assert reports(out) == [{"led_is_on": True, "telemetry_interval_s": 5}]
    assert dev.led_is_on and dev.telemetry_interval_s == 5
    assert dev.next_wakeup() == 5.0  # due from the last sample, not from now


def test_stale_and_repeated_deltas_are_ignored() -> None:
    dev = make()
    up(dev)
    assert reports(delta(dev, 1.0, {"led_is_on": True}, 5))
    assert delta(dev, 2.0, {"led_is_on": False}, 4) == []  # older version
    assert delta(dev, 2.0, {"led_is_on": False}, 5) == []  # same version
    assert delta(dev, 2.0, {"led_is_on": True}, 6) == []  # same delta again


def test_unknown_and_mistyped_keys_are_reported_once_and_never_looped() -> None:
    dev = make()
    up(dev)
    state = {"led_is_on": "yes", "colour": "blue", "telemetry_interval_s": 0}
    (rep,) = reports(delta(dev, 1.0, state, 2))
    assert rep == {
        "rejected_keys": ["led_is_on", "colour", "telemetry_interval_s"],
        "config_error": "led_is_on: expected true or false; colour: unknown key; "
                        "telemetry_interval_s: expected an integer 1..86400"}
    assert delta(dev, 2.0, state, 3) == []  # the service re-sends the same delta
    # after a reconnect the get tells what the shadow already holds: still no report
    dev.on_connect(3.0)
    got = send(dev, 3.1, "shadow/get/accepted", {
        "state": {"desired": state, "reported": {"rejected_keys": rep["rejected_keys"]},
                  "delta": state}, "version": 4})
    assert reports(got) == []
    # the operator removes the bad keys: the rejection is cleared once
    (cleared,) = reports(delta(dev, 4.0, {"led_is_on": True}, 5))
    assert cleared == {"led_is_on": True, "rejected_keys": None, "config_error": None}


@pytest.mark.parametrize("value", [0, 86401, 1.5, "60", True, None])
def test_interval_out_of_range_or_mistyped_is_rejected(value: Any) -> None:
    dev = make()
    up(dev)
    (rep,) = reports(delta(dev, 1.0, {"telemetry_interval_s": value}, 2))
    assert rep["rejected_keys"] == ["telemetry_interval_s"]
    assert dev.telemetry_interval_s == 60


def test_interval_as_integral_float_is_accepted() -> None:
    dev = make()
    up(dev)
    assert reports(delta(dev, 1.0, {"telemetry_interval_s": 30.0}, 2)) == [
        {"telemetry_interval_s": 30}]


def test_settings_persist_across_reboot() -> None:
    dev = make()
    up(dev)
    delta(dev, 1.0, {"led_is_on": True, "telemetry_interval_s": 7}, 2)
    out = send(dev, 2.0, "jobs/start-next/accepted", {"execution": {
        "jobId": "r1", "status": "QUEUED", "jobDocument": {"operation": "reboot"},
        "versionNumber": 1}})
    _, boot = restart_and_boot(dev, out, 2.0)
    assert reports(boot)[0]["led_is_on"] is True
    assert reports(boot)[0]["telemetry_interval_s"] == 7


def test_malformed_documents_count_as_errors_and_change_nothing() -> None:
    dev = make()
    up(dev)
    for payload in (b"", b"{", b"[1]", b'{"a":"\x00"}', b"\xff\xfe", b"[" * 20 + b"]" * 20,
                    b'{"state": ' * 17 + b"1" + b"}" * 17):
        assert send(dev, 1.0, "shadow/update/delta", payload) == []
    assert dev.errors == 7
    (t,) = pubs(dev.tick(60.0), "/telemetry")
    assert t.json()["errors"] == 7


def test_strict_config_refuses_the_interval() -> None:
    dev = make(profile=DeviceProfile(strict_config=True))
    up(dev)
    (rep,) = reports(delta(dev, 1.0, {"telemetry_interval_s": 5, "led_is_on": True}, 2))
    assert rep == {"led_is_on": True, "rejected_keys": ["telemetry_interval_s"],
                   "config_error": "telemetry_interval_s: unknown key"}


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(
    st.sampled_from(["led_is_on", "telemetry_interval_s", "target_version", "ota_url",
                     "ota_sha256", "colour", "x" * 60]),
    st.one_of(st.booleans(), st.integers(-5, 100000), st.text(max_size=70), st.none(),
              st.floats(allow_nan=False, allow_infinity=False),
              st.lists(st.integers(-1000, 1000), max_size=2)),
    max_size=7))
def test_any_delta_is_answered_at_most_once(state: dict[str, Any]) -> None:
    dev = make()
    up(dev)
    first = delta(dev, 1.0, state, 2)
    assert len(reports(first)) <= 1
    assert all(isinstance(a, Publish | Download) for a in first)
    assert delta(dev, 2.0, state, 3) == []


# ---------------------------------------------------------------------------- OTA


def start_ota(dev: Device, image: FirmwareImage, now: float = 1.0) -> Download:
    out = delta(dev, now, ota_state(image), 7)
    assert reports(out) == [{"ota_status": "downloading", "ota_error": None}]
    # The service accepts "downloading" while the download runs: the answer waits for it.
    assert accept(dev, now) == []
    (dl,) = [a for a in out if isinstance(a, Download)]
    return dl


def test_ota_good_image_updates_reboots_and_confirms() -> None:
    dev = make(hw="rev-c")
    up(dev)
    image = IMAGES["2.3.0"]
    dl = start_ota(dev, image)
    assert dl.url == "http://127.0.0.1:9/fw.bin"
    out = dev.on_download(2.0, image.to_bytes())
    # "verifying" was queued behind "downloading" (its answer waits for the install) and
    # "applying" replaced it; the queued report goes out before the reboot.
    assert [r["ota_status"] for r in reports(out)] == ["applying"]
    (restart,) = [a for a in out if isinstance(a, Restart)]
    assert restart.flush and restart.reason == "ota"
    now, boot = restart_and_boot(dev, out, 2.0)
    rep = reports(boot)[0]
    assert rep["firmware_version"] == "2.3.0"
    assert (rep["ota_status"], rep["ota_error"]) == ("idle", None)
    assert (rep["target_version"], rep["ota_url"], rep["ota_sha256"]) == (
        "2.3.0", "http://127.0.0.1:9/fw.bin", image.sha256)
    assert pubs(boot, "/presence")[0].json()["firmware_version"] == "2.3.0"
    assert pubs(boot, "/telemetry")[0].json()["reset_reason"] == "sw_reboot"
    assert dev.flash.pending
    token = pubs(boot, "/shadow/update")[0].json()["clientToken"]
    send(dev, now + 0.1, "shadow/update/accepted", {"clientToken": token, "version": 9})
    assert not dev.flash.pending and dev.confirm_deadline is None
    assert dev.tick(now + 1000) is not None and dev.firmware_version == "2.3.0"


def test_ota_already_running_target_converges_without_download() -> None:
    dev = make(fw="2.3.0")
    up(dev)
    out = delta(dev, 1.0, ota_state(IMAGES["2.3.0"]), 2)
    assert not [a for a in out if isinstance(a, Download)]
    (rep,) = reports(out)
    assert rep["target_version"] == "2.3.0" and rep["ota_status"] == "idle"


def test_ota_partial_trio_is_completed_from_the_last_get() -> None:
    dev = make()
    up(dev)
    image = IMAGES["2.4.1"]
    trio = ota_state(image)
    out = send(dev, 1.0, "shadow/get/accepted", {
        "state": {"desired": trio, "reported": {}}, "version": 3})
    assert [a for a in out if isinstance(a, Download)] == []  # no delta in the get
    out = delta(dev, 2.0, {"target_version": "2.4.1"}, 4)
    assert [a for a in out if isinstance(a, Download)]


def fail_case(image_bytes: bytes, target: dict[str, Any], error: str) -> None:
    dev = make(hw="rev-c")
    up(dev)
    out = delta(dev, 1.0, target, 7)
    assert [a for a in out if isinstance(a, Download)]
    assert accept(dev, 1.0) == []  # held back until the install ends
    out = dev.on_download(2.0, image_bytes)
    statuses = [(r["ota_status"], r["ota_error"]) for r in reports(out)]
    assert statuses[-1] == ("failed", error)
    assert not [a for a in out if isinstance(a, Restart)]
    assert dev.firmware_version == "2.2.0" and dev.ota_failed.version == target["target_version"]
    # the same target again (e.g. after a reconnect's get) is not retried
    dev.on_connect(3.0)
    again = send(dev, 3.5, "shadow/get/accepted",
                 {"state": {"desired": target, "reported": {}, "delta": target}, "version": 8})
    assert not [a for a in again if isinstance(a, Download)]
    rep = reports(dev.on_connect(4.0))[0]
    assert (rep["ota_status"], rep["ota_error"]) == ("failed", error)
    # a corrected sha256 for the same version is a new target
    fixed = dict(target, ota_sha256="ab" * 32)
    assert [a for a in delta(dev, 5.0, fixed, 9) if isinstance(a, Download)]


def test_ota_sha256_mismatch() -> None:
    image = IMAGES["2.3.0"]
    fail_case(image.to_bytes() + b"x", ota_state(image), "sha256 mismatch")


def test_ota_sha256_compare_is_case_insensitive() -> None:
    dev = make(hw="rev-c")
    up(dev)
    image = IMAGES["2.3.0"]
    delta(dev, 1.0, dict(ota_state(image), ota_sha256=image.sha256.upper()), 2)
    out = dev.on_download(2.0, image.to_bytes())
    assert reports(out)[-1]["ota_status"] == "applying"


def test_ota_bad_magic() -> None:
    data = b"NOTANIMG" + IMAGES["2.3.0"].to_bytes()[8:]
    target = {"target_version": "2.3.0", "ota_url": "http://h/f.bin",
              "ota_sha256": __import__("hashlib").sha256(data).hexdigest()}
    fail_case(data, target, "bad image magic")


def test_ota_image_version_differs_from_target() -> None:
    image = IMAGES["2.4.1"]
    target = dict(ota_state(image), target_version="2.4.0")
    fail_case(image.to_bytes(), target, "image version 2.4.1 != target 2.4.0")


def test_ota_download_failure() -> None:
    dev = make()
    up(dev)
    start_ota(dev, IMAGES["2.3.0"])
    out = dev.on_download(2.0, None, "HTTP 404")
    assert reports(out) == [{"ota_status": "failed", "ota_error": "download failed: HTTP 404"}]
    assert dev.errors == 1


def test_messages_during_a_download_wait_for_it() -> None:
    dev = make(telemetry_interval_s=1)
    up(dev)
    start_ota(dev, IMAGES["2.3.0"])
    assert delta(dev, 1.5, {"led_is_on": True}, 8) == []
    assert dev.tick(5.0) == []  # blocked in the install: no telemetry either
    out = dev.on_download(6.0, None, "Couldn't connect to server")
    assert reports(out)[-1]["ota_status"] == "failed"
    assert reports(accept(dev, 6.0)) == [{"led_is_on": True}]  # one update in flight
    assert pubs(dev.tick(6.0), "/telemetry")


def test_relative_url_resolves_against_the_firmware_base_url() -> None:
    dev = make(firmware_base_url="http://127.0.0.1:8080/files/")
    up(dev)
    out = delta(dev, 1.0, ota_state(IMAGES["2.3.0"], "firmware/fleet-fw-2.3.0.bin"), 2)
    (dl,) = [a for a in out if isinstance(a, Download)]
    assert dl.url == "http://127.0.0.1:8080/files/firmware/fleet-fw-2.3.0.bin"
    # without a base URL the firmware refuses a relative URL
    plain = make()
    up(plain)
    (rep,) = reports(delta(plain, 1.0, ota_state(IMAGES["2.3.0"], "firmware/x.bin"), 2))
    assert rep["rejected_keys"] == ["ota_url"]


def crash_loop(dev: Device, image: FirmwareImage) -> list[Action]:
    up(dev)
    start_ota(dev, image)
    out = dev.on_download(2.0, image.to_bytes())
    restart = next(a for a in out if isinstance(a, Restart))
    now = 2.0 + restart.delay_s
    crashes = 0
    while True:
        actions = dev.boot(now)
        if actions == [Connect()]:
            break
        crashes += 1
        (restart,) = actions
        assert isinstance(restart, Restart) and restart.reason == "panic"
        now += restart.delay_s
    assert crashes == 3
    return dev.on_connect(now)


def test_crash_on_hw_image_rolls_back_after_three_boots() -> None:
    dev = make(hw="rev-b")
    boot = crash_loop(dev, CRASHY)
    rep = reports(boot)[0]
    assert rep["firmware_version"] == "2.2.0"
    assert (rep["ota_status"], rep["ota_error"]) == ("failed", "rolled back: crash loop on boot")
    assert pubs(boot, "/telemetry")[0].json()["reset_reason"] == "ota_rollback"
    target = ota_state(CRASHY)
    again = send(dev, 99.0, "shadow/get/accepted",
                 {"state": {"desired": target, "reported": {}, "delta": target}, "version": 9})
    assert not [a for a in again if isinstance(a, Download)]  # remembered as failed


def test_crash_on_hw_image_runs_on_other_hardware() -> None:
    dev = make(hw="rev-c")
    up(dev)
    start_ota(dev, CRASHY)
    out = dev.on_download(2.0, CRASHY.to_bytes())
    _, boot = restart_and_boot(dev, out, 2.0)
    assert reports(boot)[0]["firmware_version"] == "2.4.0"


def test_crash_loop_profile_matches_version_and_hardware() -> None:
    profile = DeviceProfile(crash_loop=("2.4.1", "rev-c"))
    dev = make(hw="rev-c", profile=profile)
    rep = reports(crash_loop(dev, IMAGES["2.4.1"]))[0]
    assert rep["ota_error"] == "rolled back: crash loop on boot"
    other = make(hw="rev-a", profile=profile)
    up(other)
    start_ota(other, IMAGES["2.4.1"])
    _, boot = restart_and_boot(other, other.on_download(2.0, IMAGES["2.4.1"].to_bytes()), 2.0)
    assert reports(boot)[0]["firmware_version"] == "2.4.1"


def test_unconfirmed_image_is_rolled_back_after_the_confirm_timeout() -> None:
    dev = make(hw="rev-c", confirm_timeout_s=30.0)
    up(dev)
    start_ota(dev, IMAGES["2.3.0"])
    now, _ = restart_and_boot(dev, dev.on_download(2.0, IMAGES["2.3.0"].to_bytes()), 2.0)
    assert dev.firmware_version == "2.3.0"
    (restart,) = dev.tick(dev.confirm_deadline or 0.0)
    assert isinstance(restart, Restart)
    _, boot = restart_and_boot(dev, [restart], now + 30)
    rep = reports(boot)[0]
    assert rep["firmware_version"] == "2.2.0"
    assert rep["ota_error"] == "rolled back: not confirmed within 30 s"


# ---------------------------------------------------------------------------- jobs


def execution(job_id: str, document: dict[str, Any]) -> dict[str, Any]:
    return {"execution": {"jobId": job_id, "status": "QUEUED", "jobDocument": document,
                          "versionNumber": 1}}


def job_updates(actions: list[Action]) -> list[tuple[str, dict[str, Any]]]:
    return [(p.topic.split("/")[-2], p.json()) for p in pubs(actions, "/update")
            if "/jobs/" in p.topic]


def test_job_diagnostic_then_start_next_again() -> None:
    dev = make()
    up(dev)
    out = send(dev, 12.0, "jobs/start-next/accepted", execution("diag-1", {
        "operation": "diagnostic"}))
    ((job, doc),) = job_updates(out)
    assert job == "diag-1" and doc["status"] == "SUCCEEDED"
    details = doc["statusDetails"]
    assert set(details) == {"heap_free", "uptime_s", "rssi", "temp_c", "firmware_version"}
    assert all(isinstance(v, str) for v in details.values())
    assert details["uptime_s"] == "12" and details["firmware_version"] == "2.2.0"
    assert set(doc) == {"status", "statusDetails", "clientToken"}
    nxt = send(dev, 13.0, "jobs/diag-1/update/accepted", {"clientToken": doc["clientToken"]})
    assert [p.topic for p in pubs(nxt)] == [f"{P}/jobs/start-next"]
    assert send(dev, 13.1, "jobs/start-next/accepted", {"clientToken": "x"}) == []


@pytest.mark.parametrize(("command", "status", "details"), [
    ("led_on", "SUCCEEDED", {"led_is_on": "true"}),
    ("led_off", "SUCCEEDED", {"led_is_on": "false"}),
    ("fail", "FAILED", {"reason": "command failed as requested"}),
    ("dance", "FAILED", {"reason": "unknown command: dance"}),
    (None, "FAILED", {"reason": "unknown command: (missing)"}),
])
def test_job_command(command: str | None, status: str, details: dict[str, str]) -> None:
    dev = make()
    up(dev)
    document: dict[str, Any] = {"operation": "command"}
    if command is not None:
        document["command"] = command
    out = send(dev, 1.0, "jobs/start-next/accepted", execution("cmd-1", document))
    ((_, doc),) = job_updates(out)
    assert (doc["status"], doc["statusDetails"]) == (status, details)
    if command == "led_on":
        assert reports(out) == [{"led_is_on": True}]


def test_job_config_update() -> None:
    dev = make()
    up(dev)
    out = send(dev, 1.0, "jobs/start-next/accepted", execution("cfg-1", {
        "operation": "config_update", "config": {"telemetry_interval_s": 30}}))
    assert reports(out) == [{"telemetry_interval_s": 30}]
    assert job_updates(out)[0][1]["statusDetails"] == {"applied": "true"}
    send(dev, 1.1, "jobs/cfg-1/update/accepted", {})
    out = send(dev, 2.0, "jobs/start-next/accepted", execution("cfg-2", {
        "operation": "config_update",
        "config": {"led_is_on": True, "colour": "red", "target_version": "9.9.9"}}))
    assert reports(out) == [{"led_is_on": True}]
    ((_, doc),) = job_updates(out)
    assert doc["status"] == "FAILED"
    assert doc["statusDetails"] == {
        "reason": "colour: unknown key; target_version: OTA keys are set through the shadow only",
        "rejected_keys": "colour,target_version"}


def test_job_reboot_reports_after_the_boot() -> None:
    dev = make()
    up(dev)
    out = send(dev, 1.0, "jobs/start-next/accepted", execution("reboot-1", {
        "operation": "reboot"}))
    (restart,) = out
    assert isinstance(restart, Restart) and restart.flush
    assert not dev.running
    now, boot = restart_and_boot(dev, out, 1.0)
    assert not pubs(boot, "/jobs/start-next")
    ((job, doc),) = job_updates(boot)
    assert job == "reboot-1"
    assert (doc["status"], doc["statusDetails"]) == ("SUCCEEDED", {"reset_reason": "sw_reboot"})
    nxt = send(dev, now + 1, "jobs/reboot-1/update/accepted", {})
    assert pubs(nxt, "/jobs/start-next")
    assert "job_reboot" not in dev.flash.nvs


def test_job_notify_next_pulls_and_bad_executions_fail() -> None:
    dev = make()
    up(dev)
    send(dev, 1.0, "jobs/start-next/accepted", {})  # queue empty -> idle
    assert send(dev, 1.5, "jobs/notify-next", {}) == []
    out = send(dev, 2.0, "jobs/notify-next", execution("j1", {"operation": "x"}))
    assert [p.topic for p in pubs(out)] == [f"{P}/jobs/start-next"]
    out = send(dev, 2.1, "jobs/start-next/accepted", execution("j1", {"operation": "x"}))
    assert job_updates(out)[0][1]["statusDetails"] == {"reason": "unknown operation: x"}
    out = send(dev, 2.2, "jobs/j1/update/rejected", {"code": "VersionMismatch"})
    assert pubs(out, "/jobs/start-next")
    # the rejected job is not run again
    assert send(dev, 2.3, "jobs/start-next/accepted", execution("j1", {"operation": "x"})) == []


def test_notify_next_while_waiting_for_start_next_asks_again() -> None:
    # The answer to start-next may be lost (a service killed after taking the request):
    # a notify-next then makes the device ask again, as jobs.c does; while it runs a job a
    # notify-next only marks that more is queued.
    dev = make()
    up(dev)
    note = execution("j1", {"operation": "diagnostic"})
    assert dev.jobs_state == "wait_start_next"  # its connect-time start-next is unanswered
    again = send(dev, 1.5, "jobs/notify-next", note)
    assert [p.topic for p in pubs(again)] == [f"{P}/jobs/start-next"]
    out = send(dev, 2.0, "jobs/start-next/accepted", note)
    assert job_updates(out)[0][1]["status"] == "SUCCEEDED"
    assert pubs(send(dev, 2.1, "jobs/notify-next", note), "/jobs/start-next") == []
    assert dev.pull_again


# ------------------------------------------------------------------------ profiles


def telemetry_series(dev: Device, n: int) -> list[dict[str, Any]]:
    up(dev)
    return [pubs(dev.tick(60.0 * i), "/telemetry")[0].json() for i in range(1, n + 1)]


def test_same_seed_same_behaviour() -> None:
    a = [dict(t, ts=0) for t in telemetry_series(make(), 20)]
    b = [dict(t, ts=0) for t in telemetry_series(make(), 20)]
    assert a == b


def test_bad_sensor_reads_outliers() -> None:
    temps = [t["temp_c"] for t in telemetry_series(make(profile=DeviceProfile(bad_sensor=True)),
                                                   50)]
    assert sum(t > 90 for t in temps) > 25
    normal = [t["temp_c"] for t in telemetry_series(make(), 50)]
    assert max(normal) < 60


def test_memory_leak_drains_heap_then_panics() -> None:
    dev = make(profile=DeviceProfile(leak_bytes_per_s=300.0), telemetry_interval_s=60)
    up(dev)
    heaps = []
    now = 0.0
    while True:
        when = dev.next_wakeup()
        assert when is not None and when > now
        now = when
        out = dev.tick(now)
        if any(isinstance(a, Restart) for a in out):
            break
        heaps += [p.json()["heap_free"] for p in pubs(out, "/telemetry")]
    assert heaps == sorted(heaps, reverse=True) and len(heaps) >= 8
    assert 500 < now < 700
    _, boot = restart_and_boot(dev, out, now)
    assert pubs(boot, "/telemetry")[0].json()["reset_reason"] == "panic"


def test_flaky_device_drops_its_link() -> None:
    dev = make(profile=DeviceProfile(flaky_mean_s=30.0))
    up(dev)
    when = dev.next_wakeup()
    assert when is not None
    drops = []
    now = 0.0
    for _ in range(20):
        when = dev.next_wakeup()
        assert when is not None
        now = when
        drops += [a for a in dev.tick(now) if isinstance(a, DropConnection)]
        if not dev.connected:
            dev.on_connect(now + 5)
    assert drops and all(1.0 <= d.offline_s <= 15.0 for d in drops)


def test_power_off_publishes_offline_retained() -> None:
    dev = make()
    up(dev)
    (p,) = dev.power_off(5.0)
    assert isinstance(p, Publish)
    assert (p.topic, p.payload, p.qos, p.retain) == (
        f"fleet/{THING}/presence", b'{"state":"offline"}', 1, True)


# ------------------------------------------------------------------ retry contract
# The same cases as firmware/tests/test_device.c: the two devices retry identically.


def quiet(retry_s: float = 2.0, telemetry_interval_s: int = 3600) -> Device:
    """Up, boot report accepted; later updates are answered (or not) by the test."""
    dev = make(shadow_retry_s=retry_s, telemetry_interval_s=telemetry_interval_s)
    up(dev, auto_accept=False)
    return dev


def led(dev: Device, now: float, on: bool, version: int) -> list[Action]:
    return delta(dev, now, {"led_is_on": on}, version)


def run_until(dev: Device, end: float, now: float) -> list[Action]:
    """Tick the device at each of its wakeups up to ``end``; what it emitted."""
    out: list[Action] = []
    while True:
        when = dev.next_wakeup()
        if when is None or when > end:
            return out
        now = max(when, now)
        out += dev.tick(now)


def updates(actions: list[Action]) -> list[bytes]:
    return [p.payload for p in pubs(actions, "/shadow/update")]


def test_unanswered_update_is_resent_with_the_same_token_and_payload() -> None:
    dev = quiet()
    # This device's waits: 2 s, then 4 s, each jittered into [w/2, w) by its name.
    w1 = shadow_retry_wait_s(2.0, 1, shadow_retry_seed(dev.cfg.thing))
    w2 = shadow_retry_wait_s(2.0, 2, shadow_retry_seed(dev.cfg.thing))
    assert 1.0 <= w1 < 2.0 and 2.0 <= w2 < 4.0
    (first,) = updates(led(dev, 1.0, True, 2))
    assert updates(run_until(dev, 1.0 + w1 - 0.01, 1.0)) == []
    assert updates(run_until(dev, 1.0 + w1, 1.0)) == [first]
    t = 1.0 + w1
    assert updates(run_until(dev, t + w2 - 0.01, t)) == []
    assert updates(run_until(dev, t + w2, t)) == [first]  # the wait doubled
    assert accept(dev, t + w2 + 0.5) == []
    assert updates(run_until(dev, 1000.0, t + w2 + 0.5)) == []


def test_update_unanswered_after_the_last_attempt_is_given_up() -> None:
    dev = quiet()
    led(dev, 0.0, True, 2)
    errors = dev.errors
    assert len(updates(run_until(dev, 2 + 4 + 8 + 16, 0.0))) == SHADOW_ATTEMPTS_MAX - 1
    assert dev.update_in_flight is not None
    assert updates(run_until(dev, 1000.0, 30.0)) == []
    assert dev.update_in_flight is None and dev.errors == errors + 1


def test_update_rejected_500_or_429_is_resent_after_the_wait() -> None:
    dev = quiet()
    (first,) = updates(led(dev, 0.0, True, 2))
    assert reject(dev, 0.1, 500) == []  # not at once: backoff
    assert updates(run_until(dev, 2.0, 0.1)) == [first]
    assert reject(dev, 2.1, 429) == []
    assert updates(run_until(dev, 6.0, 2.1)) == [first]
    accept(dev, 6.1)
    assert updates(run_until(dev, 1000.0, 6.1)) == []


def test_accepted_update_is_not_resent() -> None:
    dev = quiet()
    led(dev, 0.0, True, 2)
    assert accept(dev, 0.1) == []
    assert dev.update_in_flight is None
    assert updates(run_until(dev, 1000.0, 0.1)) == []


@pytest.mark.parametrize("code", [400, 409])
def test_update_rejected_400_or_409_is_not_resent(code: int) -> None:
    dev = quiet()
    led(dev, 0.0, True, 2)
    assert reject(dev, 0.1, code) == []
    assert dev.update_in_flight is None
    assert updates(run_until(dev, 1000.0, 0.1)) == []


def test_another_clients_answer_does_not_finish_the_update_in_flight() -> None:
    dev = quiet()
    (first,) = updates(led(dev, 0.0, True, 2))
    send(dev, 0.1, "shadow/update/accepted", {"clientToken": "console-1", "version": 3})
    send(dev, 0.1, "shadow/update/rejected",
         {"code": 400, "message": "bad", "clientToken": "console-2"})
    assert updates(run_until(dev, 2.0, 0.1)) == [first]


def test_one_update_in_flight_newer_reports_merge_into_the_queued_one() -> None:
    dev = quiet()
    (first,) = updates(led(dev, 0.0, True, 2))
    assert updates(delta(dev, 0.1, {"telemetry_interval_s": 9}, 3)) == []
    assert updates(led(dev, 0.2, False, 4)) == []
    assert updates(run_until(dev, 2.0, 0.2)) == [first]  # a retry is still the first
    (merged,) = updates(accept(dev, 2.1))
    doc, before = orjson.loads(merged), orjson.loads(first)
    assert doc["state"]["reported"] == {"telemetry_interval_s": 9, "led_is_on": False}
    assert doc["clientToken"] != before["clientToken"]
    assert accept(dev, 2.2) == []
    assert updates(run_until(dev, 1000.0, 2.2)) == []


def test_reconnect_resends_the_update_in_flight_before_the_full_report() -> None:
    dev = quiet()
    (first,) = updates(led(dev, 0.0, True, 2))
    dev.on_disconnect(0.5)
    assert updates(run_until(dev, 10.0, 0.5)) == []  # offline: nothing sent
    assert updates(dev.on_connect(10.0)) == [first]
    (full,) = reports(accept(dev, 10.1))
    assert full["firmware_version"] == "2.2.0"


def test_queued_boot_report_still_confirms_a_pending_image() -> None:
    dev = make(hw="rev-c")
    up(dev)
    start_ota(dev, IMAGES["2.3.0"])
    out = dev.on_download(2.0, IMAGES["2.3.0"].to_bytes())
    now = next(a for a in out if isinstance(a, Restart)).delay_s + 2.0
    assert dev.boot(now) == [Connect()]
    (boot,) = updates(dev.on_connect(now))
    dev.on_disconnect(now + 0.1)  # the boot report's answer is lost
    assert updates(dev.on_connect(now + 1)) == [boot]  # a second full report queues
    accept(dev, now + 1.1)
    assert not dev.flash.pending


def test_retry_wait_schedule_matches_the_firmware() -> None:
    # The vectors firmware/tests/test_shadow.c asserts for fleet_shadow_retry_wait_ms.
    a, b = shadow_retry_seed("dev-001"), shadow_retry_seed("dev-002")
    assert shadow_retry_seed("") == 2166136261 and shadow_retry_seed("a") == 0xE40C292C
    assert [shadow_retry_wait_s(2.0, 1, a), shadow_retry_wait_s(2.0, 2, a),
            shadow_retry_wait_s(2.0, 1, b)] == [1.429, 2.664, 1.908]
    # Each wait within [w/2, w) of the doubling schedule, capped.
    for seed in range(0, 2000, 7):
        for base, attempt, w in [(0, 1, 5.0), (2.0, 1, 2.0), (2.0, 3, 8.0), (5.0, 5, 60.0),
                                 (5.0, 40, 60.0)]:
            assert w / 2 <= shadow_retry_wait_s(base, attempt, seed) < w


def test_devices_whose_requests_died_together_do_not_retry_together() -> None:
    waits = [shadow_retry_wait_s(2.0, 2, shadow_retry_seed(f"dev-{i:04d}"))
             for i in range(1000)]
    assert len(set(waits)) > 600  # spread over the second, not one thundering herd
    assert max(waits) - min(waits) > 1.8


def test_merge_reported_overlays_newer_values_and_keeps_nulls() -> None:
    older = {"ota_status": "verifying", "ota_error": None, "tags": {"location": "lab"},
             "rejected_keys": ["a", "b"]}
    merge_reported(older, {"ota_status": "failed", "ota_error": "sha256 mismatch",
                           "tags": {"room": "2"}, "rejected_keys": None, "led_is_on": True})
    assert orjson.dumps(older) == (
        b'{"ota_status":"failed","ota_error":"sha256 mismatch",'
        b'"tags":{"location":"lab","room":"2"},"rejected_keys":null,"led_is_on":true}')
