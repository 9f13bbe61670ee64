"""The firmware's host build for tests and benchmarks: the demo's (tsq.demo.firmware)."""

from __future__ import annotations

from tsq.demo.firmware import FirmwareError, SimulatedDevice, build_host_firmware, firmware_source_dir

__all__ = ["FirmwareError", "SimulatedDevice", "build_host_firmware", "firmware_source_dir"]
