"""Django signals of the datasets app.

``job_event`` fires after commit, right after a job event went out on the job's SSE channel, with the same
``event_type`` and JSON ``payload``. The web UI listens to it to send HTML fragments on the same channel
(``send_event(job_channel(job.id), "<name>", html, json_encode=False)``), so pages and API clients share one
stream and one ``lastEventId`` sequence. Receivers run in the job runner's thread: keep them quick.
"""

from __future__ import annotations

from django.dispatch import Signal

#: sender=GenerationJob, job=<GenerationJob>, event_type=<"status" | "item" | "done">, payload=<dict>
job_event = Signal()
