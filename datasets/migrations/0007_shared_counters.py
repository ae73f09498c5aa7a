"""The atomic counters of the shared limits (``samsite.common.counters``): SSE cap, login lockout, throttles."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('datasets', '0006_dataset_labels'),
    ]

    operations = [
        migrations.CreateModel(
            name='Counter',
            fields=[
                ('key', models.CharField(max_length=200, primary_key=True, serialize=False)),
                ('count', models.BigIntegerField(default=0)),
                ('expires_at', models.FloatField(db_index=True, help_text='Unix time after which the count is void.')),
            ],
            options={
                'db_table': 'samsite_counter',
            },
        ),
    ]
