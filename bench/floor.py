"""The floor: the least a Python client of this kind must do, to measure apiproc against.

    python bench/floor.py requests.jsonl out.jsonl --url http://127.0.0.1:8080/v1/messages \
        --key sk-bench --concurrency 64 [--uvloop]

It reads the JSONL lazily, POSTs each line as it is over a fixed number of connections
with the headers the API requires, and appends each answer to the output in one write.
No parsing, no rate limits, no retries, no ids: any real client costs at least this much,
so apiproc's figures are read as a ratio to it, measured in the same run on the same machine.
The event loop is plain asyncio unless --uvloop, to match what apiproc would get installed.
Exit status 0 when every answer was HTTP 200, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Iterator

import aiohttp


async def send_all(lines: Iterator[bytes], url: str, key: str, concurrency: int, fd: int) -> int:
    """Send every line, `concurrency` at a time; the number of answers that were not 200."""
    headers = {
        "x-api-key": key,
        "anthropic-version": "2023-06-01",
        "content-type": "application/json",
    }
    failed = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal failed
        for body in lines:  # one shared iterator: each line goes to exactly one worker
            async with session.post(url, data=body) as response:
                answer = await response.read()
            failed += response.status != 200
            os.write(fd, answer + b"\n")  # one write per answer, as apiproc does

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop, as apiproc[fast]")
    args = parser.parse_args()
    fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    with open(args.input, "rb") as handle:
        lines = (line.rstrip(b"\r\n") for line in handle if line.strip())
        coroutine = send_all(lines, args.url, args.key, args.concurrency, fd)
        if args.uvloop:
            import uvloop

            failed = uvloop.run(coroutine)
        else:
            failed = asyncio.run(coroutine)
    os.close(fd)
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
