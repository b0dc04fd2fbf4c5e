"""Device simulator: N simulated ESP32 devices speaking the firmware's protocol.

- :mod:`fleet_tui.sim.protocol`: limits, topics, document gate, versions, image header and
  the delta parser, ported from ``firmware/core``;
- :mod:`fleet_tui.sim.device`: one device as an I/O-free state machine;
- :mod:`fleet_tui.sim.profiles`: deterministic failure profiles;
- :mod:`fleet_tui.sim.mqtt_lite`: the small MQTT 3.1.1 client the fleet uses;
- :mod:`fleet_tui.sim.http`: OTA downloads;
- :mod:`fleet_tui.sim.fleet`: N devices on one event loop;
- :mod:`fleet_tui.sim.cli`: ``fleet-tui sim``.
"""
