"""`apiproc batch status|results|cancel|list`: the batches of a state file, or of the account.

    rows = await status_rows(provider, read_state(path))           # one row per batch
    info = await one_batch(provider, "msgbatch_...", cancel=False)
    async for page in account_batches(provider, limit=20, pages=1): ...
    counts = await download(provider, "msgbatch_...", "results.jsonl")

With a state file, `results` and `cancel` run the batch runner itself (collect, or cancel
then collect), so the output and the journal stay exactly as a rerun would leave them.
Without one, they act on a single batch id and write the API's result lines in the
output's shape (without the input's line numbers and metadata, which only a state file
knows).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from apiproc.batch.journal import CREATED, INTENDED, NOT_CREATED, JournalState
from apiproc.jsonio import dumps_line
from apiproc.providers import Provider, batch_api
from apiproc.providers.batches import SUCCEEDED, BatchApi, BatchInfo
from apiproc.results import Result, batch_record
from apiproc.resume import sidecar_path

STATE_SUFFIX = ".apiproc-batches.jsonl"


def state_file(output_or_state: str) -> str:
    """The state file of an output path, or the path itself if it is one."""
    if output_or_state.endswith(STATE_SUFFIX):
        return output_or_state
    return output_or_state + STATE_SUFFIX


def output_file(state: str) -> str:
    return state[: -len(STATE_SUFFIX)]


def messages_url(batches_endpoint: str) -> str:
    """The Messages URL a state file's batch endpoint was derived from."""
    base = batches_endpoint.rstrip("/")
    return base[: -len("/batches")] if base.endswith("/batches") else base


def output_format(output_path: str) -> str:
    """The format the output was written in, from its identity record."""
    try:
        recorded = json.loads(Path(sidecar_path(output_path)).read_text())
    except (OSError, ValueError):
        return "batch"
    found = recorded.get("output_format") if isinstance(recorded, dict) else None
    return found if found in ("batch", "cookbook") else "batch"


@dataclass(slots=True)
class StatusRow:
    seq: int
    purpose: str
    batch_id: str
    requests: int
    status: str
    counts: dict[str, int]
    written: bool
    created_at: float | None


async def status_rows(
    provider: Provider, state: JournalState, ask: bool = True, timeout: float = 60.0
) -> list[StatusRow]:
    """One row per batch of the state file; live ones asked afresh unless `ask` is off."""
    rows: list[StatusRow] = []
    async with _session(provider, timeout) as session:
        api = batch_api(provider, session)
        for intent in state.intents.values():
            status = intent.status or {
                INTENDED: "unconfirmed",
                NOT_CREATED: "not created",
                CREATED: "?",
            }.get(intent.state, "?")
            counts = dict(intent.counts)
            if ask and intent.live and intent.batch_id:
                info = await api.retrieve(intent.batch_id)
                status, counts = info.status, info.counts.as_dict()
            rows.append(
                StatusRow(
                    intent.seq,
                    intent.purpose,
                    intent.batch_id or "-",
                    intent.count,
                    status,
                    counts,
                    intent.written,
                    intent.created_at,
                )
            )
    return rows


async def one_batch(
    provider: Provider, batch_id: str, cancel: bool = False, timeout: float = 60.0
) -> BatchInfo:
    async with _session(provider, timeout) as session:
        api = batch_api(provider, session)
        return await (api.cancel(batch_id) if cancel else api.retrieve(batch_id))


async def account_batches(
    provider: Provider, limit: int, pages: int | None, timeout: float = 60.0
) -> AsyncIterator[list[BatchInfo]]:
    """Pages of the account's batches, most recent first (`pages` None: all of them)."""
    async with _session(provider, timeout) as session:
        api = batch_api(provider, session)
        cursor: str | None = None
        shown = 0
        while pages is None or shown < pages:
            page = await api.list_page(cursor, limit)
            shown += 1
            yield page.batches
            if page.next_cursor is None:
                return
            cursor = page.next_cursor


async def download(
    provider: Provider, batch_id: str, output: str, timeout: float = 600.0
) -> dict[str, int]:
    """One batch's results, appended to `output` as output records; counts by kind."""
    counts: dict[str, int] = {}
    async with _session(provider, timeout) as session:
        api: BatchApi = batch_api(provider, session)
        info = await api.retrieve(batch_id)
        if not info.ended:
            raise ValueError(f"batch {batch_id} is {info.status}: its results come once it ends")
        with open(output, "ab") as handle:
            async for item in api.results(info):
                result = Result(
                    item.custom_id,
                    0,
                    message=item.message,
                    error=item.error if item.kind != SUCCEEDED else None,
                    request_id=item.request_id,
                    outcome=item.kind if item.kind in ("canceled", "expired") else None,
                )
                record: dict[str, Any] = batch_record(result)
                record.pop("line", None)  # not known without the state file
                record.pop("attempts", None)
                handle.write(dumps_line(record))
                counts[item.kind] = counts.get(item.kind, 0) + 1
    return counts


def _session(provider: Provider, timeout: float) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        headers=provider.session_headers, timeout=aiohttp.ClientTimeout(total=timeout)
    )
