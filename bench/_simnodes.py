"""Simulated secondaries on loopback for the agent benchmarks (not a benchmark:
scripts/run_bench.py skips `_*.py`).

Each simulated node is one listening socket answering `GET /api/health` with a
fixed HTTP response; a thousand of them need a raised open-file limit.
"""

from __future__ import annotations

import asyncio
import resource


def raise_fd_limit(need: int) -> None:
    """Raise this process's soft RLIMIT_NOFILE to `need` (at most the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))


def health_answer(body: bytes) -> bytes:
    """The whole HTTP response of a health endpoint answering the JSON `body`."""
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: " + str(len(body)).encode()
            + b"\r\n\r\n" + body)


async def health_endpoint(host: str, answer: bytes, silent=lambda: False) -> asyncio.Server:
    """A server on `host`, a free port, giving `answer` to every request; while
    `silent()` is true it reads the request and never answers (a dead host)."""

    async def handle(reader, writer):
        try:
            await reader.readuntil(b"\r\n\r\n")
            if silent():
                await asyncio.sleep(3600)
            writer.write(answer)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, 0, backlog=256)
