"""``manage.py prune``: delete ended generation jobs older than a number of days, with their files."""

from __future__ import annotations

from datetime import timedelta

from django.core.management.base import BaseCommand
from django.utils import timezone

from datasets.models import GenerationJob


class Command(BaseCommand):
    help = (
        "Delete finished, failed and canceled jobs (variants, masks, items) older than --days. The embedding "
        "and decoded-image caches need no pruning: they are size-bounded LRUs (EMBED_CACHE_MB, "
        "DECODED_CACHE_MB); --clear-cache empties both. Expired limit counters (throttles, lockouts) are "
        "deleted too."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--days", type=int, default=30, help="Age of the jobs to delete (default 30).")
        parser.add_argument("--dry-run", action="store_true", help="Only report what would be deleted.")
        parser.add_argument(
            "--clear-cache", action="store_true", help="Also empty the embedding and decoded-image caches."
        )

    def handle(self, *args, **options) -> None:
        from datasets.image_io import decoded_cache
        from datasets.jobs.services import job_delete
        from datasets.segmentation import embedding_cache

        cutoff = timezone.now() - timedelta(days=options["days"])
        jobs = GenerationJob.objects.filter(status__in=GenerationJob.TERMINAL, created__lt=cutoff)
        count = variants = 0
        for job in jobs.iterator():
            count += 1
            variants += job.variant_count
            if not options["dry_run"]:
                job_delete(job=job)
        verb = "would delete" if options["dry_run"] else "deleted"
        self.stdout.write(f"{verb} {count} jobs ({variants} variants) older than {options['days']} days")
        if not options["dry_run"]:
            from samsite.common.counters import counters_prune

            # Expired limit counters (throttles, lockouts, stream slots) restart on their next use anyway.
            self.stdout.write(f"deleted {counters_prune()} expired limit counters")
        if options["clear_cache"]:
            for cache, what in (
                (embedding_cache(), "cached embeddings"),
                (decoded_cache(), "decoded images"),
            ):
                entries = cache.count()
                if not options["dry_run"]:
                    cache.clear()
                self.stdout.write(f"{verb} {entries} {what}")
