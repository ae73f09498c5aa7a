"""Edit and segment previews on a very large image: full decode per preview vs the stored working copy.

    .venv/bin/python bench/large_preview_bench.py [--width 10000 --height 9999 --runs 3]

"before" sets PREVIEW_MAX_SIDE above the image size (every preview decodes the original, as before the
working copy existed); "after" uses the default PREVIEW_MAX_SIDE. Classical backend, one thread, no database
(unsaved rows, a local-memory cache); media in a temporary folder.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=10000)
    parser.add_argument("--height", type=int, default=9999)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="large-preview-"))
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "samsite.settings",
            "DEBUG": "true",
            "VAR_DIR": str(tmp),
            "SAM_BACKEND": "classical",
            "JOB_RUNNER": "inline",
            "OMP_NUM_THREADS": "1",
        }
    )
    import django

    django.setup()
    import numpy as np
    import psutil
    from django.conf import settings
    from django.core.files.storage import default_storage
    from django.test.utils import override_settings

    from datasets.models import Dataset, DatasetImage
    from datasets.services import previews
    from imaging.codecs import encode_image
    from imaging.edits import Edits
    from imaging.pipeline import TemplateSpec
    from imaging.points import Point

    w, h = args.width, args.height
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([(x * 255 // w), (y * 255 // h), ((x + y) * 255 // (w + h))], -1).astype(np.uint8)
    rgb[h // 4 : h // 2, w // 4 : w // 2] = (230, 40, 40)
    data = encode_image(rgb, "png")
    del rgb, x, y
    name = default_storage.save(f"datasets/bench/{uuid.uuid4().hex}.png", __import__("io").BytesIO(data))
    dataset = Dataset(id=uuid.uuid4(), owner_id=1, name="bench")
    image = DatasetImage(
        dataset=dataset,
        file=name,
        width=w,
        height=h,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        image_class="",
    )
    spec = TemplateSpec(id="t", name="t", points=(Point(0.35, 0.35, True),), edits=Edits(brightness=0.3))
    process = psutil.Process()
    print(f"image {w}x{h}, PNG {len(data) / 1e6:.1f} MB")

    locmem = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    for label, side in (
        ("before (full decode)", max(w, h) + 1),
        ("after (working copy)", settings.PREVIEW_MAX_SIDE),
    ):
        with override_settings(PREVIEW_MAX_SIDE=side, CACHES=locmem):
            for kind in ("edit", "segment"):
                times, rss = [], []
                for _ in range(args.runs):
                    previews.recent_embeddings.clear()  # another process, or a few other images later
                    start_rss = process.memory_info().rss
                    started = time.perf_counter()
                    if kind == "edit":
                        previews.edit_preview(image=image, specs=[spec])
                    else:
                        previews.segment_preview(image=image, points=list(spec.points))
                    times.append(time.perf_counter() - started)
                    rss.append((process.memory_info().rss - start_rss) / 1e6)
                print(
                    f"{label:22} {kind:8} first {times[0]:.2f} s, then median "
                    f"{statistics.median(times[1:] or times):.2f} s; RSS +{max(rss):.0f} MB max"
                )


if __name__ == "__main__":
    main()
