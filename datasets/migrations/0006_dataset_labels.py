"""The per-dataset label registry (``Dataset.labels``): categories keep their export ids for good.

The backfill numbers each dataset's labels as exports did before the registry: the current templates' labels
(the name where a template has none) by save order (position, then creation), then the labels only earlier
jobs' snapshots hold, by job creation. So existing exports keep their category ids.
"""

from django.db import migrations, models


def backfill_labels(apps, schema_editor):
    Dataset = apps.get_model("datasets", "Dataset")
    Template = apps.get_model("templates_app", "Template")
    Job = apps.get_model("datasets", "GenerationJob")
    for dataset in Dataset.objects.all().only("pk").iterator(chunk_size=500):
        labels: list[str] = []
        for label, name in (
            Template.objects.filter(dataset_id=dataset.pk)
            .order_by("position", "created")
            .values_list("label", "name")
        ):
            labels.append(label or name)
        for snapshot in (
            Job.objects.filter(dataset_id=dataset.pk).order_by("created").values_list("templates_snapshot", flat=True)
        ):
            labels.extend(t.get("label") or t.get("name") or "" for t in snapshot or [])
        registry = [label for label in dict.fromkeys(labels) if label]
        if registry:
            Dataset.objects.filter(pk=dataset.pk).update(labels=registry)


class Migration(migrations.Migration):
    dependencies = [
        ("datasets", "0005_cache_table"),
        ("templates_app", "0002_template_box_label_mask_choice"),
    ]

    operations = [
        migrations.AddField(
            model_name="dataset",
            name="labels",
            field=models.JSONField(
                blank=True,
                default=list,
                help_text="The category registry: every label a template of this dataset has had, in first-use "
                "order. A label's export id is its index + 1; labels are only ever appended (never renumbered or "
                "reused).",
            ),
        ),
        migrations.RunPython(backfill_labels, migrations.RunPython.noop, elidable=False),
    ]
