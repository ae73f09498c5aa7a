"""A job runner in its own process, for the resume test: ``python killable_runner.py <job id>``.

Settings come from the environment the test passes (test database, media and cache dirs). Each image is
slowed down by ``ITEM_DELAY`` seconds so the test can kill the process in the middle of the job.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "samsite.settings")

import django

django.setup()

from datasets.jobs import processing as generation  # noqa: E402

delay = float(os.environ.get("ITEM_DELAY", "0"))
process = generation._ChunkProcessor._process


def slow_process(self, decoded, pool):
    time.sleep(delay)
    return process(self, decoded, pool)


generation._ChunkProcessor._process = slow_process
generation.generate_job(sys.argv[1])
