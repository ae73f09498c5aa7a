"""A job runner in its own process, for the resume test: ``python killable_runner.py <job id>``.

Settings come from the environment the test passes (test database, media and cache dirs). With
``HOLD_AT_ITEM=n`` it processes ``n`` images, then, before the next one, writes ``holding`` on stdout and
blocks until the test kills it: the kill lands at a known point (``n`` images committed, the rest of its
claim still held), however fast or slow the machine is.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "samsite.settings")

import django

django.setup()

from datasets.jobs import processing as generation  # noqa: E402

hold_at = int(os.environ.get("HOLD_AT_ITEM", "-1"))
process = generation._ChunkProcessor._process
processed = 0


def held_process(self, prepared, pool):
    # Images are processed one at a time by the chunk's loop thread, each committed before the next starts.
    global processed
    if processed == hold_at:
        sys.stdout.write("holding\n")
        sys.stdout.flush()
        threading.Event().wait()  # never set: only the test's SIGKILL ends this
    processed += 1
    return process(self, prepared, pool)


generation._ChunkProcessor._process = held_process
generation.generate_job(sys.argv[1])
