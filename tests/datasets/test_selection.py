"""``datasets.selection.templates_from_input``: every shape the interfaces accept, and their error codes."""

from __future__ import annotations

import pytest

from datasets.selection import templates_from_input
from samsite.common.errors import ServiceError
from tests.fixtures.factories import DatasetFactory, TemplateFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def dataset():
    return DatasetFactory()


@pytest.fixture
def first(dataset):
    return TemplateFactory(dataset=dataset, position=0)


@pytest.fixture
def second(dataset):
    return TemplateFactory(dataset=dataset, position=1)


def _error(**kwargs) -> ServiceError:
    with pytest.raises(ServiceError) as raised:
        templates_from_input(**kwargs)
    return raised.value


def test_nothing_named_is_none_and_an_empty_list_is_empty(dataset, first):
    assert templates_from_input(dataset) is None
    assert templates_from_input(dataset, "", "") is None
    assert templates_from_input(dataset, []) == []


def test_entries_are_ids_or_objects_in_request_order(dataset, first, second):
    listed = [second.id.hex, {"id": first.id.hex, "edits": {"gamma": 1.2}}, {"template_id": str(second.id)}]

    assert templates_from_input(dataset, listed) == [(second, None), (first, {"gamma": 1.2}), (second, None)]


def test_a_template_listed_twice_is_one_entry_when_merging(dataset, first):
    listed = [{"id": first.id.hex}, {"id": first.id.hex, "edits": {"gamma": 1.2}}]

    assert templates_from_input(dataset, listed, merge_duplicates=True) == [(first, {"gamma": 1.2})]


def test_the_edits_map_fills_in_and_adds_templates(dataset, first, second):
    listed = [{"id": first.id.hex, "edits": {"gamma": 1.2}}]
    edits = {first.id.hex: {"gamma": 0.5}, second.id.hex: {"brightness": 0.1}}

    assert templates_from_input(dataset, listed, edits) == [
        (first, {"gamma": 1.2}),
        (second, {"brightness": 0.1}),
    ]
    assert templates_from_input(dataset, [first.id.hex], {first.id.hex: {"gamma": 0.5}}) == [
        (first, {"gamma": 0.5})
    ]


def test_flat_edits_apply_to_the_listed_templates_or_to_all(dataset, first, second):
    flat = {"brightness": 0.3}

    assert templates_from_input(dataset, [second.id.hex], flat) == [(second, flat)]
    assert templates_from_input(dataset, None, flat) == [(first, flat), (second, flat)]


def test_shape_errors_use_the_callers_code(dataset, first):
    not_a_list = _error(dataset=dataset, templates={"id": first.id.hex}, invalid_code="invalid_templates")
    bad_entry = _error(dataset=dataset, templates=[first.id.hex, 7])
    no_id = _error(dataset=dataset, templates=[{"edits": {}}], invalid_code="invalid_templates")
    bad_map = _error(dataset=dataset, edits=["brightness"])

    assert (not_a_list.code, not_a_list.extra) == ("invalid_templates", {"field": "templates"})
    assert (bad_entry.code, bad_entry.extra) == ("invalid_template", {"field": "templates", "index": 1})
    assert (no_id.code, no_id.extra) == ("invalid_templates", {"field": "templates", "index": 0})
    assert (bad_map.code, bad_map.extra) == ("invalid_edits", {"field": "edits"})


def test_a_template_of_another_dataset_is_not_found(dataset, first):
    foreign = TemplateFactory()
    listed = _error(dataset=dataset, templates=[first.id.hex, foreign.id.hex])
    mapped = _error(dataset=dataset, edits={"nope": {}})

    assert (listed.code, listed.extra) == ("invalid_template", {"field": "templates", "index": 1})
    assert (mapped.code, mapped.extra) == ("invalid_template", {"field": "templates", "template_id": "nope"})


def test_the_not_found_error_is_the_callers(dataset):
    def not_found(template_id, index):
        return ServiceError(
            "template_not_found", "template not found", status=404, template_id=str(template_id)
        )

    error = _error(dataset=dataset, templates=["0" * 32], not_found=not_found)

    assert (error.code, error.status, error.extra) == ("template_not_found", 404, {"template_id": "0" * 32})


def test_the_preview_limit_applies_unless_the_caller_lifts_it(dataset, first, settings):
    settings.MAX_TEMPLATES_PER_PREVIEW = 1
    listed = [first.id.hex, first.id.hex]

    assert _error(dataset=dataset, templates=listed).code == "too_many_templates"
    assert _error(dataset=dataset, edits={"a": {}, "b": {}}).code == "too_many_templates"
    assert templates_from_input(dataset, listed, limit=None) == [(first, None), (first, None)]


def test_edits_are_checked_now_when_asked(dataset, first):
    listed = [{"id": first.id.hex}, {"id": first.id.hex, "edits": {"glow": 1}}]

    assert templates_from_input(dataset, listed)[1] == (first, {"glow": 1})  # the service checks them later
    error = _error(dataset=dataset, templates=listed, validate_edits=True)
    assert (error.code, error.extra) == ("invalid_edits", {"field": "glow", "index": 1})
