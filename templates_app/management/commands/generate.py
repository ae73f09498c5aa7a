"""``manage.py generate``: a headless bulk run, from a folder (or ZIP) of images and a templates file to a ZIP.

It goes through exactly the services the web app uses (dataset_create, images_upload, template_create,
job_create, the generation runner and the ZIP download), runs the job in this process (inline runner) and
shows a progress bar fed by the job's own ``item`` events.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import UploadedFile
from django.core.management.base import BaseCommand, CommandError

from datasets.models import ComposeMode, GenerationJob, JobSource, OutputFormat
from imaging.codecs import is_image_filename
from samsite.common.errors import ServiceError

TEMPLATES_HELP = """\
templates.json is a JSON list of templates, applied in list order:
  [
    {"name": "scratch",                       (optional; default "Template N")
     "label": "defect",                       (optional: category name in exports; default the name)
     "class": "fail",                         (optional: "pass" | "fail" | "" = all images)
     "points": [{"x_norm": 0.42, "y_norm": 0.37, "positive": true},
                {"x_norm": 0.10, "y_norm": 0.90, "positive": false}],
     "box": [0.30, 0.25, 0.60, 0.55],         (optional: [x0, y0, x1, y1]; with a box, points may be [])
     "mask_choice": "best",                   (optional: "best" or 0, 1, 2: SAM's candidate by granularity)
     "edits": {"brightness": 0.2, "hue": 30}}  (optional; see EDITS.md: brightness, contrast,
  ]                                           gamma, hue, saturation, sharpen, noise, opacity)
Points are normalised to the image size (0..1, x from the left, y from the top), so one template
applies to every image. An image's class comes from its file name ("pass"/"fail" in it).

--annotate makes no edited images: only every template's mask on every image (edits are ignored).
--export coco,yolo,voc,masks writes each training export next to --out, as <out>-<format>.zip
(see GET /api/jobs/{id}/export/ in the API docs for the layouts).
"""


class Command(BaseCommand):
    help = "Generate the edited variants of a folder or ZIP of images from a templates file, into a ZIP."

    def create_parser(self, prog_name, subcommand, **kwargs):
        from argparse import RawDescriptionHelpFormatter

        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.formatter_class = RawDescriptionHelpFormatter
        parser.epilog = TEMPLATES_HELP
        return parser

    def add_arguments(self, parser) -> None:
        parser.add_argument("--images", required=True, help="A folder of images, or a .zip of them.")
        parser.add_argument("--templates", required=True, help="templates.json (see below).")
        parser.add_argument("--out", required=True, help="Where to write the variants ZIP.")
        parser.add_argument(
            "--compose",
            choices=ComposeMode.values,
            default=ComposeMode.STACK,
            help="stack: one variant per image, templates layered (default); each: one per image and template; "
            "annotate: masks only, no edited images.",
        )
        parser.add_argument(
            "--annotate", action="store_true", help="Annotate only (the same as --compose annotate)."
        )
        parser.add_argument(
            "--export",
            default="",
            help="Comma-separated training exports to write next to --out: coco, yolo, voc, masks.",
        )
        parser.add_argument(
            "--format",
            choices=OutputFormat.values,
            default=OutputFormat.PNG,
            dest="fmt",
            help="Output format.",
        )
        parser.add_argument("--export-mask", action="store_true", help="Put the masks in the ZIP too.")
        parser.add_argument(
            "--user", help="Owner of the dataset and job (default: the first superuser, else a 'cli' user)."
        )
        parser.add_argument("--name", help="Dataset name (default: the images folder's name and the time).")
        parser.add_argument("--no-progress", action="store_true", help="No progress bar (logs, CI).")

    def handle(self, *args, **options) -> None:
        from datasets.jobs import runners as runner
        from datasets.jobs.downloads import job_zip
        from datasets.jobs.exports import export_zip
        from datasets.jobs.services import job_create
        from datasets.services.datasets import dataset_create

        images_path = Path(options["images"])
        templates = self._read_templates(Path(options["templates"]))
        out = Path(options["out"])
        if not images_path.exists():
            raise CommandError(f"{images_path} does not exist")
        if out.parent and not out.parent.exists():
            raise CommandError(f"the folder of {out} does not exist")
        exports = self._exports(options.get("export") or "")
        compose = ComposeMode.ANNOTATE if options.get("annotate") else options["compose"]
        owner = self._owner(options.get("user"))
        name = options.get("name") or f"{images_path.stem} {time.strftime('%Y-%m-%d %H:%M:%S')}"

        try:
            dataset = dataset_create(owner=owner, name=name)
            created, rejected = self._upload(dataset, images_path)
            for problem in rejected:
                self.stderr.write(f"skipped {problem.filename}: {problem.error}")
            if not created:
                raise CommandError("no usable images")
            self._create_templates(dataset, templates)
            progress = _Progress(total=len(created), enabled=not options["no_progress"], stream=self.stderr)
            started = time.perf_counter()
            with progress, runner.use_runner("inline"):
                job = job_create(
                    dataset=dataset,
                    owner=owner,
                    compose=compose,
                    output_format=options["fmt"],
                    export_mask=options["export_mask"],
                    source=JobSource.CLI,
                )
            elapsed = time.perf_counter() - started
        except ServiceError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from exc

        job = GenerationJob.objects.get(pk=job.pk)
        with out.open("wb") as handle:
            for chunk in job_zip(job):
                handle.write(chunk)
        rate = job.processed_items / elapsed if elapsed else 0.0
        self.stdout.write(
            f"job {job.id.hex} {job.status}: {job.succeeded_items} succeeded, {job.failed_items} failed, "
            f"{job.skipped_items} skipped; {job.variant_count} variants; {job.encoder_calls} encoder calls, "
            f"{job.cache_hits} cache hits; {rate:.2f} images/s; segmenter {job.segmenter}"
        )
        for item in job.items.filter(status="failed").select_related("image"):
            self.stderr.write(f"failed {item.image.filename}: {item.error}")
        self.stdout.write(f"wrote {out} (dataset {dataset.id.hex}, owner {owner.get_username()})")
        for fmt in exports:
            target = export_path(out, fmt)
            with target.open("wb") as handle:
                for chunk in export_zip(job, fmt):
                    handle.write(chunk)
            self.stdout.write(f"wrote {target} ({fmt} export)")
        if job.status != "succeeded":
            raise CommandError(f"job {job.status}: {job.error}")

    def _exports(self, raw: str) -> list[str]:
        from datasets.jobs.exports import EXPORT_FORMATS

        chosen = [part.strip().lower() for part in raw.split(",") if part.strip()]
        unknown = [fmt for fmt in chosen if fmt not in EXPORT_FORMATS]
        if unknown:
            raise CommandError(
                f"--export: unknown format {unknown[0]!r}; choose from {', '.join(EXPORT_FORMATS)}"
            )
        return list(dict.fromkeys(chosen))

    def _read_templates(self, path: Path) -> list[dict]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CommandError(f"{path} does not exist") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise CommandError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(data, list) or not data or not all(isinstance(t, dict) for t in data):
            raise CommandError(f"{path} must hold a non-empty JSON list of templates\n\n{TEMPLATES_HELP}")
        return data

    def _owner(self, username: str | None):
        users = get_user_model()
        if username:
            try:
                return users.objects.get(**{users.USERNAME_FIELD: username})
            except users.DoesNotExist:
                raise CommandError(f"no user {username!r}") from None
        first_admin = users.objects.filter(is_superuser=True).order_by("pk").first()
        if first_admin is not None:
            return first_admin
        user, created = users.objects.get_or_create(**{users.USERNAME_FIELD: "cli"})
        if created:
            user.set_unusable_password()
            user.save()
        return user

    def _upload(self, dataset, images_path: Path):
        from datasets.services.uploads import images_upload

        if images_path.is_dir():
            paths = sorted(p for p in images_path.iterdir() if p.is_file() and is_image_filename(p.name))
            handles = [p.open("rb") for p in paths]
            try:
                files = [
                    UploadedFile(h, name=p.name, size=p.stat().st_size)
                    for h, p in zip(handles, paths, strict=True)
                ]
                result = images_upload(dataset=dataset, files=files)
            finally:
                for handle in handles:
                    handle.close()
        elif images_path.suffix.lower() == ".zip":
            with images_path.open("rb") as handle:
                archive = UploadedFile(handle, name=images_path.name, size=images_path.stat().st_size)
                result = images_upload(dataset=dataset, files=[], archive=archive)
        else:
            raise CommandError(f"{images_path} is neither a folder nor a .zip")
        return result.created, result.rejected

    def _create_templates(self, dataset, templates: list[dict]) -> None:
        from templates_app.services import template_create

        for index, spec in enumerate(templates):
            try:
                template_create(
                    dataset=dataset,
                    points=spec.get("points") or [],
                    box=spec.get("box"),
                    mask_choice=spec.get("mask_choice", "best"),
                    name=str(spec.get("name") or ""),
                    label=spec.get("label"),
                    image_class=spec.get("class") or spec.get("image_class") or "",
                    default_edits=spec.get("edits") or {},
                )
            except ServiceError as exc:
                where = f" ({exc.extra})" if exc.extra else ""
                raise CommandError(f"template #{index + 1}: {exc.code}: {exc.message}{where}") from exc


def export_path(out: Path, fmt: str) -> Path:
    """Where ``--export fmt`` goes: beside ``out``, named ``<out stem>-<fmt>.zip``."""
    return out.with_name(f"{out.stem}-{fmt}.zip")


class _Progress:
    """A tqdm bar (images/s, ETA) driven by the job's ``item`` events through the ``job_event`` signal."""

    def __init__(self, *, total: int, enabled: bool, stream) -> None:
        self.total, self.enabled, self.stream = total, enabled, stream
        self.bar = None

    def __enter__(self) -> _Progress:
        from datasets.jobs.signals import job_event

        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, unit="img", file=self.stream._out, dynamic_ncols=True)
        job_event.connect(self._on_event, dispatch_uid=f"generate-cli-{id(self)}")
        return self

    def __exit__(self, *exc) -> None:
        from datasets.jobs.signals import job_event

        job_event.disconnect(dispatch_uid=f"generate-cli-{id(self)}")
        if self.bar is not None:
            self.bar.close()

    def _on_event(self, sender, job, event_type, payload, **kwargs) -> None:
        if event_type != "item":
            return
        if self.bar is not None:
            self.bar.update(1)
            counters = payload.get("counters", {})
            self.bar.set_postfix(ok=counters.get("succeeded"), failed=counters.get("failed"), refresh=False)
        elif payload.get("status") == "failed":
            self.stream.write(f"[{payload['index'] + 1}/{payload['total']}] {payload['filename']}: failed")
