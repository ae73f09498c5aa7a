"""Run by test_deploy.py in a fresh process against a database made by ``manage.py migrate`` alone.

Does what a first user does: an upload (REST and the seed API's dataset/init), a template, a job and its ZIP
download; prints one JSON line of what each step answered.
"""

from __future__ import annotations

import io
import json
import sys
import zipfile

import django


def main() -> None:
    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.files.uploadedfile import SimpleUploadedFile
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    from tests.fixtures.images import png_bytes

    user = get_user_model().objects.create_user("deployer", password="a long enough password")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    steps: dict = {}

    created = client.post("/api/datasets/", {"name": "first"}, format="json")
    steps["dataset"] = created.status_code
    dataset_id = created.json()["id"]
    upload = client.post(
        f"/api/datasets/{dataset_id}/images/",
        {
            "images": [
                SimpleUploadedFile("a.png", png_bytes(seed=1)),
                SimpleUploadedFile("b.png", png_bytes(seed=2)),
            ]
        },
        format="multipart",
    )
    steps["upload"] = upload.status_code
    steps["uploaded"] = upload.json().get("count") if upload.status_code < 500 else None
    seed = client.post("/sam/dataset/init", {"images": [SimpleUploadedFile("c.png", png_bytes(seed=3))]})
    steps["seed_init"] = seed.status_code
    template = client.post(
        f"/api/datasets/{dataset_id}/templates/",
        {"points": [{"x_norm": 0.4, "y_norm": 0.4, "positive": True}], "default_edits": {"brightness": 0.3}},
        format="json",
    )
    steps["template"] = template.status_code
    job = client.post(f"/api/datasets/{dataset_id}/jobs/", {}, format="json")
    steps["job"] = job.status_code
    if job.status_code not in (201, 202):
        print(json.dumps({**steps, "job_body": job.json()}))
        return 1
    job_id = job.json()["id"]
    steps["job_status"] = client.get(f"/api/jobs/{job_id}/").json()["status"]
    download = client.get(f"/api/jobs/{job_id}/download/")
    steps["download"] = download.status_code
    body = b"".join(download.streaming_content) if download.streaming else download.content
    names = zipfile.ZipFile(io.BytesIO(body)).namelist()
    steps["zip_images"] = sum(name.endswith(".png") for name in names)
    print(json.dumps(steps))


if __name__ == "__main__":
    sys.exit(main())
