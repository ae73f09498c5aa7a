"""schemathesis against ``/api/schema/``: every documented operation, fuzzed, answers no 5xx and only
responses its schema describes.

In process (the WSGI app, the test database), authenticated as a user who has a dataset with images, a
template and a finished job (inline runner, classical backend, tiny images), so the list and detail operations
validate real payloads: two of every three generated cases of an operation get that user's real ids as their
path parameters (the third keeps the generated ones: unknown ids, 404), and every GET with path parameters is
also called once with real ids and must answer 200. Bounded: a few examples per operation, derandomized, so
the run is the same every time and takes about two minutes on two cores.
"""

from __future__ import annotations

import itertools
import json

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.fixtures.factories import DatasetFactory, DatasetImageFactory, TemplateFactory, UserFactory

EXAMPLES_PER_OPERATION = 6


@pytest.fixture
def fuzz_user(db, django_capture_on_commit_callbacks):
    from rest_framework.authtoken.models import Token

    from datasets.jobs.services import job_create

    user = UserFactory(username="fuzzer")
    dataset = DatasetFactory(owner=user, name="fuzzed")
    images = [DatasetImageFactory(dataset=dataset, position=position) for position in range(2)]
    template = TemplateFactory(dataset=dataset)
    with django_capture_on_commit_callbacks(execute=True):  # the inline runner starts after commit
        job = job_create(dataset=dataset, owner=user, export_mask=True)
    job.refresh_from_db()
    assert job.status == "succeeded", job.status
    variant = job.variants.first()
    ids = {
        "dataset_id": dataset.id.hex,
        "image_id": images[0].id.hex,
        "template_id": template.id.hex,
        "job_id": job.id.hex,
        "variant_id": variant.id.hex,
    }
    return user, Token.objects.create(user=user).key, ids


@pytest.fixture
def _keep_the_test_connection():
    """As Django's test client does: requests must not close the test transaction's connection."""
    from django.core import signals
    from django.db import close_old_connections

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


def _load_schema():
    """The schema that ``/api/schema/`` serves (same generator), loaded without a request: the test's
    fixtures (database, user) do not exist yet at collection time."""
    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.renderers import OpenApiJsonRenderer

    from samsite.wsgi import application

    raw = json.loads(OpenApiJsonRenderer().render(SchemaGenerator().get_schema(request=None, public=True)))
    loaded = schemathesis.openapi.from_dict(raw)
    loaded.app = application
    return loaded


schema = _load_schema()

#: Operations never called with real ids: under WSGI a live event stream of a job would not end.
NO_REAL_IDS = {"/api/jobs/{job_id}/events/"}
_case_numbers = itertools.count()


def _with_real_ids(case, ids: dict) -> None:
    if case.operation.path in NO_REAL_IDS or not case.path_parameters:
        return
    if next(_case_numbers) % 3 == 2:
        return  # keep the generated (unknown) ids
    for name in case.path_parameters:
        if name in ids:
            case.path_parameters[name] = ids[name]


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_conforms_to_its_schema(case, fuzz_user, _keep_the_test_connection):
    _user, key, ids = fuzz_user
    _with_real_ids(case, ids)
    case.call_and_validate(
        headers={"Authorization": f"Token {key}"}, checks=[not_a_server_error, response_schema_conformance]
    )


_DETAIL_GETS = [
    (path, method)
    for path, methods in schema.raw_schema["paths"].items()
    for method in methods
    if method == "get" and "{" in path and path not in NO_REAL_IDS
]


@pytest.mark.parametrize(("path", "method"), _DETAIL_GETS)
def test_every_detail_operation_answers_200_with_real_ids(path, method, fuzz_user, _keep_the_test_connection):
    _user, key, ids = fuzz_user
    operation = schema[path][method.upper()]
    names = [parameter.name for parameter in operation.path_parameters]
    query = {"format": "coco"} if path.endswith("/export/") else None
    case = operation.Case(path_parameters={name: ids[name] for name in names}, query=query)

    response = case.call_and_validate(
        headers={"Authorization": f"Token {key}"}, checks=[not_a_server_error, response_schema_conformance]
    )

    assert response.status_code == 200, (path, response.status_code, response.content[:300])
