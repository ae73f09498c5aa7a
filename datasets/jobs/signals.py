"""Django signals of the job subsystem (``datasets.jobs``).

``job_event`` fires after commit, in the process that committed the change (the web process's runner thread, a
Celery worker, ``samworker``), right after the job event was stored and sent on the job's SSE channel, with
the same ``event_type`` and JSON ``payload``. Workers render no HTML: pages render their fragments from the
JSON events in the web process, so receivers must not assume they run there. Receivers run in the worker's
thread: keep them quick (the ``generate`` command's progress bar and the tests' event log listen to it).
"""

from __future__ import annotations

from django.dispatch import Signal

#: sender=GenerationJob, job=<GenerationJob>, event_type=<"status" | "item" | "done">, payload=<dict>
job_event = Signal()
