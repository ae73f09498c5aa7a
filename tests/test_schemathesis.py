"""schemathesis against ``/api/schema/``: every documented operation, fuzzed, answers no 5xx and only
responses its schema describes.

In process (the WSGI app, the test database), authenticated as a user who has a dataset with images, a
template and a finished job, so the list and detail operations validate real payloads. Bounded: a few
examples per operation, derandomized, so the run is the same every time and takes well under two minutes.
"""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.fixtures.factories import DatasetFactory, DatasetImageFactory, TemplateFactory, UserFactory

EXAMPLES_PER_OPERATION = 6


@pytest.fixture
def fuzz_user(db):
    from rest_framework.authtoken.models import Token

    user = UserFactory(username="fuzzer")
    dataset = DatasetFactory(owner=user, name="fuzzed")
    for position in range(2):
        DatasetImageFactory(dataset=dataset, position=position)
    TemplateFactory(dataset=dataset)
    return user, Token.objects.create(user=user).key


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


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_conforms_to_its_schema(case, fuzz_user, _keep_the_test_connection):
    _user, key = fuzz_user
    case.call_and_validate(
        headers={"Authorization": f"Token {key}"}, checks=[not_a_server_error, response_schema_conformance]
    )
