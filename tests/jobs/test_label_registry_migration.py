"""The label registry migration (datasets 0006) numbers existing labels as exports did before it."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor


@pytest.mark.django_db(transaction=True)
def test_the_label_registry_is_backfilled_in_first_use_order():
    executor = MigrationExecutor(connection)
    old = [("datasets", "0005_cache_table"), ("templates_app", "0002_template_box_label_mask_choice")]
    executor.migrate(old)
    apps = executor.loader.project_state(old).apps
    User = apps.get_model("auth", "User")
    Dataset = apps.get_model("datasets", "Dataset")
    Template = apps.get_model("templates_app", "Template")
    Job = apps.get_model("datasets", "GenerationJob")
    owner = User.objects.create(username="dora")
    filled = Dataset.objects.create(owner=owner, name="Filled")
    empty = Dataset.objects.create(owner=owner, name="Empty")
    point = [{"x_norm": 0.5, "y_norm": 0.5, "positive": True}]
    # Saved in another order than their positions; two share a label; one has none (its name counts).
    for name, label, position in (("c", "pump", 2), ("a", "cap", 0), ("b", "", 1), ("d", "cap", 3)):
        Template.objects.create(dataset=filled, name=name, label=label, points=point, position=position)
    Job.objects.create(
        dataset=filled,
        owner=owner,
        templates_snapshot=[
            {"template_id": "e" * 32, "name": "gone", "label": "nozzle"},
            {"template_id": "f" * 32, "name": "old name"},  # a snapshot from before labels
        ],
    )

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

    from datasets.models import Dataset as NewDataset

    assert NewDataset.objects.get(pk=filled.pk).labels == ["cap", "b", "pump", "nozzle", "old name"]
    assert NewDataset.objects.get(pk=empty.pk).labels == []
