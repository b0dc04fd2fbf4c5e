"""fleet-tui: a terminal operations console for fleets of ESP32 devices."""

__version__ = "0.1.0"
