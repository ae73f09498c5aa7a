"""Relaying a job's stored events as they are committed, in the web process, without polling the database.

A relay registers a django-eventstream listener on the job's channel (woken by this process's pushes, or by its
Redis listener when ``EVENTSTREAM_REDIS`` is set, so events produced by workers on other machines wake it too),
then reads the stored events after the last one it relayed each time it is woken. Storage is the source of truth:
a wake-up only says "look again", so a burst larger than the listener's queue, or a wake-up lost in transit, loses
nothing (a slow safety re-read every ``resync_seconds`` covers the latter).

Consumers derive their own wire format from the JSON payloads: the job page renders HTML fragments
(``frontend.live``), the seed-compatible API its old event format.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

from asgiref.sync import sync_to_async


@dataclass(frozen=True)
class StoredEvent:
    channel: str
    id: int
    type: str
    payload: dict

    @property
    def event_id(self) -> str:
        """The ``lastEventId`` a client resumes after this event with (``job-<hex>:<n>``)."""
        return f"{self.channel}:{self.id}"


def parse_event_id(value: str | None, channel: str) -> int:
    """The sequence number in a ``<channel>:<n>`` event id (0 when absent, malformed or another channel's)."""
    if not value:
        return 0
    for part in str(value).split(","):
        name, _, number = part.rpartition(":")
        if name == channel and number.isdigit():
            return int(number)
    return 0


def stored_events_after(channel: str, after: int, *, limit: int = 200) -> list[StoredEvent]:
    """The channel's stored events with a sequence number above ``after``, oldest first."""
    from django_eventstream.models import Event

    rows = Event.objects.filter(channel=channel, eid__gt=after).order_by("eid")[:limit]
    events = []
    for row in rows:
        data = json.loads(row.data)
        if isinstance(data, str):  # stored pre-encoded by send_job_event
            data = json.loads(data)
        events.append(StoredEvent(channel=row.channel, id=row.eid, type=row.type, payload=data))
    return events


async def relay_events(
    channel: str, *, after: int = 0, keepalive_seconds: float = 20.0, resync_seconds: float = 30.0
) -> AsyncIterator[StoredEvent | None]:
    """Yield the channel's stored events after ``after`` as they are committed, forever; ``None`` every
    ``keepalive_seconds`` of silence (the caller sends a keep-alive). Stop by closing the generator."""
    from django_eventstream.views import Listener, get_listener_manager

    listener = Listener()
    listener.channels = {channel}
    listener.assign_loop()
    manager = get_listener_manager()
    manager.add_listener(listener)
    read = sync_to_async(stored_events_after, thread_sensitive=False)
    loop = asyncio.get_running_loop()
    try:
        quiet_since = last_read = loop.time()
        due = True
        while True:
            if due:
                # Clear before reading: an event committed after the read sets the flag again, so none is missed.
                listener.aevent.clear()
                listener.channel_items.clear()
                listener.overflow = False
                events = await read(channel, after)
                last_read = loop.time()
                for event in events:
                    after = event.id
                    yield event
                if events:
                    quiet_since = loop.time()
                    continue
            now = loop.time()
            wait = min(resync_seconds - (now - last_read), keepalive_seconds - (now - quiet_since))
            try:
                await asyncio.wait_for(listener.aevent.wait(), timeout=max(wait, 0.001))
                due = True
            except TimeoutError:
                now = loop.time()
                if now - quiet_since >= keepalive_seconds:
                    quiet_since = now
                    yield None
                # A keep-alive alone is no reason to read: only a wake-up or the slow resync is.
                due = now - last_read >= resync_seconds
    finally:
        manager.remove_listener(listener)
