"""System statistics read from /proc (no psutil: the runtime stays pure Python)."""

from __future__ import annotations

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
