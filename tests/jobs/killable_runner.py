"""A job runner in its own process, for the resume test: ``python killable_runner.py <job id>``.

Settings come from the environment the test passes (test database, media and cache dirs). With
``HOLD_AT_ITEM=n`` it commits ``n`` images, then, before the next commit, writes ``holding`` on stdout and
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
commit = generation._ChunkProcessor._commit
committed = 0


def held_commit(self, outcome):
    # Commits run in item order on the chunk's loop thread (the next image may already be predicted and its
    # outputs rendering in the pool): holding the (n+1)-th commit leaves exactly n images committed.
    global committed
    if committed == hold_at:
        sys.stdout.write("holding\n")
        sys.stdout.flush()
        threading.Event().wait()  # never set: only the test's SIGKILL ends this
    committed += 1
    return commit(self, outcome)


generation._ChunkProcessor._commit = held_commit
generation.generate_job(sys.argv[1])
