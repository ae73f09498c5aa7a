"""factory_boy factories for every model. Images are real, small, decodable PNGs."""

from __future__ import annotations

import hashlib
import io

import factory
import numpy as np
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from PIL import Image

from datasets.models import STACK_TEMPLATE_KEY, Dataset, DatasetImage, GenerationJob, JobItem, Variant
from legacy.models import Component, LegacySession
from templates_app.models import Template


def png_bytes(width: int = 64, height: int = 48, *, seed: int = 0, mode: str = "RGB") -> bytes:
    """A deterministic, non-uniform PNG (a gradient with a bright square), distinct per seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = ((x * 255) // max(width - 1, 1)).astype(np.uint8)
    rgb = np.stack(
        [base, ((y * 255) // max(height - 1, 1)).astype(np.uint8), np.full_like(base, seed % 256)], -1
    )
    rgb[height // 4 : height // 2, width // 4 : width // 2] = rng.integers(180, 255, size=3, dtype=np.uint8)
    image = Image.fromarray(rgb)
    if mode != "RGB":
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@example.com")
    password = factory.PostGenerationMethodCall("set_password", "correct horse battery staple")

    @factory.post_generation
    def save_password(obj, create, extracted, **kwargs):
        if create:
            obj.save()


class DatasetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Dataset

    owner = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"Dataset {n}")


class DatasetImageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = DatasetImage
        exclude = ("content",)

    dataset = factory.SubFactory(DatasetFactory)
    position = factory.Sequence(lambda n: n)
    content = factory.LazyAttribute(lambda image: png_bytes(seed=image.position))
    file = factory.LazyAttribute(lambda image: ContentFile(image.content, name="image.png"))
    thumbnail = factory.LazyAttribute(lambda image: ContentFile(image.content, name="thumb.png"))
    original_filename = factory.LazyAttribute(lambda image: f"image_{image.position}.png")
    filename = factory.LazyAttribute(lambda image: image.original_filename)
    width = 64
    height = 48
    size_bytes = factory.LazyAttribute(lambda image: len(image.content))
    sha256 = factory.LazyAttribute(lambda image: hashlib.sha256(image.content).hexdigest())


class TemplateFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Template

    dataset = factory.SubFactory(DatasetFactory)
    position = factory.Sequence(lambda n: n)
    name = factory.LazyAttribute(lambda template: f"Template {template.position + 1}")
    points = factory.LazyFunction(lambda: [{"x_norm": 0.375, "y_norm": 0.375, "positive": True}])
    default_edits = factory.LazyFunction(lambda: {"brightness": 0.2})


class GenerationJobFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = GenerationJob

    dataset = factory.SubFactory(DatasetFactory)
    owner = factory.LazyAttribute(lambda job: job.dataset.owner)


class JobItemFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = JobItem

    job = factory.SubFactory(GenerationJobFactory)
    image = factory.SubFactory(DatasetImageFactory, dataset=factory.SelfAttribute("..job.dataset"))
    index = factory.Sequence(lambda n: n)


class VariantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Variant

    job = factory.SubFactory(GenerationJobFactory)
    image = factory.SubFactory(DatasetImageFactory, dataset=factory.SelfAttribute("..job.dataset"))
    template_key = STACK_TEMPLATE_KEY
    file = factory.LazyFunction(lambda: ContentFile(png_bytes(seed=99), name="variant.png"))
    score = 0.9
    area = 100
    width = 64
    height = 48


class LegacySessionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = LegacySession

    owner = factory.SubFactory(UserFactory)
    image = factory.LazyFunction(lambda: ContentFile(png_bytes(), name="legacy.png"))
    filename = "legacy.png"
    width = 64
    height = 48
    sha256 = factory.LazyFunction(lambda: hashlib.sha256(png_bytes()).hexdigest())


class ComponentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Component

    session = factory.SubFactory(LegacySessionFactory)
    number = factory.Sequence(lambda n: n + 1)
    name = factory.LazyAttribute(lambda component: f"component_{component.number}")
    mask = factory.LazyFunction(lambda: ContentFile(png_bytes(mode="L"), name="mask.png"))
    bbox = factory.LazyFunction(lambda: [0, 0, 10, 10])
    area = 100
    score = 0.8
