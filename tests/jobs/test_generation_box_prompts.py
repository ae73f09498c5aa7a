"""A job on a template with a box and a mask choice stores the candidate the template chose (tiny SAM)."""

from __future__ import annotations

import numpy as np
import pytest

from datasets.image_io import decode_stored_image
from datasets.jobs.services import job_create
from datasets.models import JobStatus
from datasets.segmentation import app_segmenter, embedding_for
from imaging.codecs import decode_mask_png
from imaging.points import denormalize, denormalize_box, parse_points
from imaging.segmenter import choose_candidate
from tests.fixtures.factories import TemplateFactory

pytestmark = pytest.mark.django_db

POINTS = [{"x_norm": 0.5, "y_norm": 0.45, "positive": True}]
BOX = [0.2, 0.1, 0.8, 0.9]


def _candidates(image, segmenter):
    decoded = decode_stored_image(image.file)
    embedding, _ = embedding_for(sha256=image.sha256, rgb=decoded.rgb, segmenter=segmenter)
    coords, labels = denormalize(parse_points(POINTS), decoded.width, decoded.height)
    box = denormalize_box(BOX, decoded.width, decoded.height)
    return segmenter.predict(embedding, coords, labels, box=box, multimask=True)


def test_the_job_uses_the_box_and_the_chosen_candidate(alice, make_photo_dataset, run_jobs, use_tiny_sam):
    dataset = make_photo_dataset(alice, names=("astronaut",))
    image = dataset.images.get()
    segmenter = app_segmenter(dataset)
    candidates = _candidates(image, segmenter)
    best = choose_candidate(candidates, "best")
    # The candidate index whose mask differs most from the best one, so using "best" would fail the test.
    index = max(
        (c.index for c in candidates if c.index is not None),
        key=lambda i: int(np.sum(choose_candidate(candidates, i).mask != best.mask)),
    )
    chosen = choose_candidate(candidates, index)
    assert not np.array_equal(chosen.mask, best.mask), "random weights gave identical candidates"
    TemplateFactory(
        dataset=dataset,
        name="Boxed",
        points=POINTS,
        box=BOX,
        mask_choice=str(index),
        default_edits={"hue": 30},
    )
    calls = segmenter.encode_calls

    with run_jobs():
        job = job_create(dataset=dataset, owner=alice)
    job.refresh_from_db()

    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.templates_snapshot[0]["box"] == BOX and job.templates_snapshot[0]["mask_choice"] == str(index)
    assert segmenter.encode_calls == calls, "the job reuses the embedding made above"
    variant = job.variants.get()
    with variant.mask_file.open("rb") as handle:
        stored = decode_mask_png(handle.read(), expected_size=(image.width, image.height))
    assert np.array_equal(stored, chosen.mask)
    assert variant.area == int(chosen.mask.sum())
    # The job record names the family and size for people, after the machine-readable part.
    assert job.segmenter.startswith("sam:") and f"({segmenter.label})" in job.segmenter
