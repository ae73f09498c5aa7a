"""Datasets, their images, and the generation jobs that turn them into variants."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from django.conf import settings
from django.db import models

from datasets.image_io import safe_suffix
from samsite.common.counters import Counter  # noqa: F401  (registered here: the shared limits' counters)
from samsite.common.db import BaseModel
from samsite.common.errors import ServiceError


class ImageClass(models.TextChoices):
    """Pass/fail label of an image, read from its filename on upload and editable afterwards."""

    NONE = "", "none"
    PASS = "pass", "pass"
    FAIL = "fail", "fail"


def image_class_from_input(
    value: object, *, field: str = "image_class", also_blank: Iterable[str] = ()
) -> str:
    """The one validator of a pass/fail class from any interface: ``""``, ``"pass"`` or ``"fail"``; None and
    ``"none"`` (and the interface's own words in ``also_blank``, e.g. the seed API's ``"all"``) mean no class.
    ServiceError("invalid_class", field=``field``) for anything else."""
    cleaned = "" if value is None or value == "none" or value in tuple(also_blank) else value
    if not isinstance(cleaned, str) or cleaned not in ImageClass.values:
        raise ServiceError("invalid_class", f"{field} must be one of '', 'pass', 'fail'", field=field)
    return cleaned


def _upload_path(prefix: str, instance_dir: str, filename: str) -> str:
    # Storage names are random: user filenames never reach the filesystem (display names live in the row).
    # Services pass a name whose suffix comes from the decoded format; anything but a known image suffix is
    # dropped, so no stored name can make a file view (or a web server) treat it as HTML.
    return f"{prefix}/{instance_dir}/{uuid.uuid4().hex}{safe_suffix(filename)}"


def image_upload_to(instance: DatasetImage, filename: str) -> str:
    return _upload_path("datasets", instance.dataset_id.hex, filename)


def thumbnail_upload_to(instance: DatasetImage, filename: str) -> str:
    return _upload_path("thumbnails", instance.dataset_id.hex, filename)


def variant_upload_to(instance: Variant, filename: str) -> str:
    return _upload_path("variants", instance.job_id.hex, filename)


class Dataset(BaseModel):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="datasets")
    name = models.CharField(max_length=200)
    checkpoint = models.CharField(
        max_length=255,
        blank=True,
        help_text="File name of the SAM checkpoint (in SAM_MODELS_DIR) this dataset uses; blank: the site's.",
    )
    labels = models.JSONField(
        default=list,
        blank=True,
        help_text="The category registry: every label a template of this dataset has had, in first-use order. "
        "A label's export id is its index + 1; labels are only ever appended (never renumbered or reused).",
    )

    class Meta:
        ordering = ["-created"]
        indexes = [models.Index(fields=["owner", "-created"], name="dataset_owner_created")]

    def __str__(self) -> str:
        return self.name


class DatasetImage(BaseModel):
    """One uploaded image. ``filename`` is the sanitised display name, unique within the dataset."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="images")
    file = models.FileField(upload_to=image_upload_to, max_length=255)
    original_filename = models.CharField(max_length=255)
    filename = models.CharField(max_length=255)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    size_bytes = models.PositiveBigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, db_index=True)
    is_grayscale = models.BooleanField(default=False)
    image_class = models.CharField(max_length=4, choices=ImageClass.choices, blank=True, default="")
    thumbnail = models.FileField(upload_to=thumbnail_upload_to, max_length=255, blank=True)
    position = models.PositiveIntegerField(help_text="Upload order within the dataset.")

    class Meta:
        ordering = ["dataset", "position"]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "filename"], name="image_unique_filename"),
            models.UniqueConstraint(fields=["dataset", "sha256"], name="image_unique_content"),
            models.UniqueConstraint(fields=["dataset", "position"], name="image_unique_position"),
        ]

    def __str__(self) -> str:
        return self.filename


class JobStatus(models.TextChoices):
    QUEUED = "queued", "queued"
    RUNNING = "running", "running"
    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed"
    CANCELED = "canceled", "canceled"


class ComposeMode(models.TextChoices):
    STACK = "stack", "stack: one variant per image, templates layered"
    EACH = "each", "each: one variant per image and template"
    ANNOTATE = "annotate", "annotate: masks and annotations only, no edited images"


class OutputFormat(models.TextChoices):
    PNG = "png", "PNG"
    JPEG = "jpeg", "JPEG"
    WEBP = "webp", "WebP"


class JobSource(models.TextChoices):
    API = "api", "REST API"
    UI = "ui", "web UI"
    SEED = "seed", "seed-compatible API"
    CLI = "cli", "command line"


class GenerationJob(BaseModel):
    """A run of a dataset's templates over all of its images.

    Status transitions (anything else is a bug)::

        queued  -> running | canceled
        running -> succeeded | failed | canceled | queued (re-queued when its runner died)
        succeeded | failed | canceled -> queued (retry of failed items)

    ``succeeded`` means the run finished, even when some items failed (they are counted in
    ``failed_items``); ``failed`` means the run itself could not go on (e.g. no segmenter).
    Counters are updated in the same transaction as the JobItem they count.
    """

    TERMINAL = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED)

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="jobs")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="jobs")
    status = models.CharField(
        max_length=10, choices=JobStatus.choices, default=JobStatus.QUEUED, db_index=True
    )
    compose = models.CharField(max_length=8, choices=ComposeMode.choices, default=ComposeMode.STACK)
    output_format = models.CharField(max_length=4, choices=OutputFormat.choices, default=OutputFormat.PNG)
    export_mask = models.BooleanField(default=False)
    source = models.CharField(max_length=4, choices=JobSource.choices, default=JobSource.API)
    templates_snapshot = models.JSONField(
        default=list, help_text="The templates, points and edits this job ran with, frozen at creation."
    )
    segmenter = models.CharField(max_length=200, blank=True, help_text="Backend and fingerprint that ran it.")
    total_items = models.PositiveIntegerField(default=0)
    succeeded_items = models.PositiveIntegerField(default=0)
    failed_items = models.PositiveIntegerField(default=0)
    skipped_items = models.PositiveIntegerField(default=0)
    variant_count = models.PositiveIntegerField(default=0)
    encoder_calls = models.PositiveIntegerField(default=0)
    cache_hits = models.PositiveIntegerField(default=0)
    timings_ms = models.JSONField(default=dict, help_text="Milliseconds spent per stage, summed over items.")
    error = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    worker = models.CharField(max_length=200, blank=True, help_text="Who runs it (host:pid:thread).")
    heartbeat = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]
        indexes = [
            models.Index(fields=["owner", "-created"], name="job_owner_created"),
            models.Index(fields=["dataset", "-created"], name="job_dataset_created"),
            models.Index(fields=["status", "created"], name="job_status_created"),
        ]

    def __str__(self) -> str:
        return f"job {self.id.hex[:8]} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL

    @property
    def processed_items(self) -> int:
        return self.succeeded_items + self.failed_items + self.skipped_items

    @property
    def duration_ms(self) -> int | None:
        if not self.started_at:
            return None
        from django.utils import timezone

        end = self.finished_at or timezone.now()
        return int((end - self.started_at).total_seconds() * 1000)


class ItemStatus(models.TextChoices):
    PENDING = "pending", "pending"
    RUNNING = "running", "running"
    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed"
    SKIPPED = "skipped", "skipped (no template applies)"


class JobItem(BaseModel):
    """One image of a job. Transitions: pending -> running (claimed: ``worker`` holds a lease until
    ``lease_expires_at``, renewed by heartbeats) -> succeeded | failed | skipped; running -> pending when its
    worker releases it (cancel, shutdown) or it is reclaimed after its lease expired (the worker died);
    failed -> pending on retry. Every write of a running item is fenced on ``worker``, which afterwards says
    who ran it."""

    DONE = (ItemStatus.SUCCEEDED, ItemStatus.FAILED, ItemStatus.SKIPPED)

    job = models.ForeignKey(GenerationJob, on_delete=models.CASCADE, related_name="items")
    image = models.ForeignKey(DatasetImage, on_delete=models.CASCADE, related_name="job_items")
    index = models.PositiveIntegerField(help_text="Position of the image in the job, from 0.")
    status = models.CharField(max_length=9, choices=ItemStatus.choices, default=ItemStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)
    ms = models.PositiveIntegerField(null=True, blank=True)
    cache_hit = models.BooleanField(default=False)
    worker = models.CharField(
        max_length=200, blank=True, help_text="Who holds the lease (host:pid:nonce:thread)."
    )
    lease_expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["job", "index"]
        constraints = [models.UniqueConstraint(fields=["job", "image"], name="jobitem_unique_image")]
        indexes = [
            models.Index(fields=["job", "status", "index"], name="jobitem_job_status"),
            models.Index(fields=["status", "lease_expires_at"], name="jobitem_status_lease"),
        ]

    def __str__(self) -> str:
        return f"item {self.index} of {self.job_id}"


STACK_TEMPLATE_KEY = "stack"


class Variant(BaseModel):
    """An edited image, or (annotate jobs) only the mask of one template on one image, with no ``file``.

    ``template_key`` is the template's hex id, or "stack" for a layered variant, so the uniqueness of (job,
    image, template) holds on every database and survives template deletion. ``annotations`` holds one entry
    per template whose mask the variant carries (each/annotate: one; stack: every applied template), in
    application order: ``{template_id, label, score, stability, area, bbox, rle, flags}`` (``rle``: COCO
    compressed RLE, see ``imaging.annotations``) — the source of the training exports. ``flags`` lists what
    needs review, ``{code, template_id, label, detail}`` (see ``datasets.jobs.quality``); ``stability`` is the
    lowest stability score of its annotations (None without mask logits).
    """

    job = models.ForeignKey(GenerationJob, on_delete=models.CASCADE, related_name="variants")
    image = models.ForeignKey(DatasetImage, on_delete=models.CASCADE, related_name="variants")
    template = models.ForeignKey(
        "templates_app.Template", on_delete=models.SET_NULL, null=True, blank=True, related_name="variants"
    )
    template_key = models.CharField(max_length=32)
    template_ids = models.JSONField(default=list, help_text="Hex ids of the templates applied, in order.")
    template_names = models.JSONField(default=list, help_text="Names of the templates applied, in order.")
    file = models.FileField(
        upload_to=variant_upload_to, max_length=255, blank=True, help_text="Empty for an annotation only."
    )
    mask_file = models.FileField(upload_to=variant_upload_to, max_length=255, blank=True)
    score = models.FloatField(default=0.0)
    area = models.PositiveIntegerField(default=0, help_text="Mask area in pixels.")
    width = models.PositiveIntegerField(default=0)
    height = models.PositiveIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True)
    stability = models.FloatField(null=True, blank=True)
    flags = models.JSONField(default=list, blank=True, help_text="Quality flags: what needs review.")
    annotations = models.JSONField(default=list, blank=True, help_text="Per template: label, RLE, scores.")

    class Meta:
        ordering = ["job", "image__position", "template_key"]
        constraints = [
            models.UniqueConstraint(
                fields=["job", "image", "template_key"], name="variant_unique_job_image_template"
            )
        ]

    def __str__(self) -> str:
        return f"variant {self.image_id}/{self.template_key}"


class SchedulerTurn(models.Model):
    """When a user's work was last handed to a worker: the round-robin between users reads and bumps it.

    Workers claim the next chunk from the user whose turn is oldest (never served first), so one user's large
    job never holds back another user's small one by more than a chunk, whatever the number of workers.
    """

    owner = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="scheduler_turn"
    )
    last_claimed_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"turn of {self.owner_id} at {self.last_claimed_at:%Y-%m-%d %H:%M:%S}"
