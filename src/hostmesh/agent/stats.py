"""System statistics read from /proc (no psutil: the runtime stays pure Python)."""

from __future__ import annotations

import math
import os
import time


class SystemStats:
    """CPU usage is measured between two calls (the first call: since boot)."""

    def __init__(self, proc: str = "/proc", disk_path: str = "/"):
        self.proc = proc
        self.disk_path = disk_path
        self._last_cpu: tuple[int, int] | None = None

    def _read(self, name: str) -> str:
        with open(os.path.join(self.proc, name), encoding="ascii") as fh:
            return fh.read()

    def cpu(self) -> dict:
        fields = self._read("stat").splitlines()[0].split()[1:]
        values = [int(v) for v in fields]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        total = sum(values[:8])
        last = self._last_cpu or (0, 0)
        self._last_cpu = (total, idle)
        d_total, d_idle = total - last[0], idle - last[1]
        percent = 100.0 * (d_total - d_idle) / d_total if d_total > 0 else 0.0
        return {"percent": round(percent, 1), "count": os.cpu_count() or 1}

    def memory(self) -> dict:
        info = {}
        for line in self._read("meminfo").splitlines():
            key, _sep, rest = line.partition(":")
            parts = rest.split()
            if parts:
                info[key] = int(parts[0]) * 1024
        total = info.get("MemTotal", 0)
        available = info.get("MemAvailable", info.get("MemFree", 0))
        used = total - available
        return {"total_bytes": total, "available_bytes": available, "used_bytes": used,
                "percent": round(100.0 * used / total, 1) if total else 0.0}

    def disk(self) -> dict:
        st = os.statvfs(self.disk_path)
        total = st.f_blocks * st.f_frsize
        free = st.f_bavail * st.f_frsize
        used = total - st.f_bfree * st.f_frsize
        return {"path": self.disk_path, "total_bytes": total, "free_bytes": free,
                "used_bytes": used, "percent": round(100.0 * used / total, 1) if total else 0.0}

    def load(self) -> dict:
        one, five, fifteen = (float(v) for v in self._read("loadavg").split()[:3])
        return {"1m": one, "5m": five, "15m": fifteen}

    def uptime(self) -> float:
        return float(self._read("uptime").split()[0])

    def snapshot(self) -> dict:
        return {"cpu": self.cpu(), "memory": self.memory(), "disk": self.disk(),
                "load": self.load(), "uptime_seconds": self.uptime(), "time": time.time()}

    def heartbeat(self) -> dict:
        """The compact stats a secondary sends with each heartbeat (see HEARTBEAT_STATS).

        CPU is the average since the previous call (the previous heartbeat)."""
        cpu, mem, disk = self.cpu(), self.memory(), self.disk()
        return {"cpu_percent": cpu["percent"], "cpu_count": cpu["count"],
                "memory_percent": mem["percent"], "memory_total_bytes": mem["total_bytes"],
                "memory_used_bytes": mem["used_bytes"], "disk_percent": disk["percent"],
                "disk_total_bytes": disk["total_bytes"], "disk_used_bytes": disk["used_bytes"],
                "load_1m": self.load()["1m"], "uptime_seconds": round(self.uptime(), 1)}


# What a heartbeat's `stats` may hold: name -> (integer?, lowest, highest). Every
# secondary may be hostile: only these keys are kept (others are dropped, so a newer
# secondary still heartbeats), each a finite number in its range, else the heartbeat
# is refused with 400 and nothing is recorded. A node's stats are stored on its own
# row only; they never touch another node's record.
HEARTBEAT_STATS: dict[str, tuple[bool, float, float]] = {
    "cpu_percent": (False, 0.0, 100.0),
    "cpu_count": (True, 1, 65536),
    "memory_percent": (False, 0.0, 100.0),
    "memory_total_bytes": (True, 0, 2**62),
    "memory_used_bytes": (True, 0, 2**62),
    "disk_percent": (False, 0.0, 100.0),
    "disk_total_bytes": (True, 0, 2**62),
    "disk_used_bytes": (True, 0, 2**62),
    "load_1m": (False, 0.0, 1e6),
    "uptime_seconds": (False, 0.0, 1e10),
}


class StatsInvalid(ValueError):
    """A heartbeat's stats are malformed; the message names the field and the range."""


def check_heartbeat_stats(value: object) -> dict | None:
    """The validated stats of a heartbeat (None stays None); raises StatsInvalid."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise StatsInvalid("stats: expected an object such as {\"cpu_percent\": 3.5, "
                           "\"memory_percent\": 41.0, \"disk_percent\": 57.0}")
    out: dict = {}
    for key, (integer, low, high) in HEARTBEAT_STATS.items():
        if key not in value:
            continue
        item = value[key]
        ok = isinstance(item, int) if integer else isinstance(item, (int, float))
        if isinstance(item, bool) or not ok or not math.isfinite(item) or \
                not low <= item <= high:
            kind = "an integer" if integer else "a number"
            raise StatsInvalid(f"stats.{key}: expected {kind} between {low:g} and {high:g}")
        out[key] = item if integer else round(float(item), 2)
    return out
