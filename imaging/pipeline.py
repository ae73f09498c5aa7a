"""The pure variant pipeline: (image, embedding, templates) → edited variants and their masks.

The job runner calls :func:`generate_for_image` per image; everything here is free of I/O and Django.

* Class filter: an image's class comes from its file name (:func:`classify_filename`); a template with a
  class applies to images of that class and to unclassed images, a template without class to every image.
* Masks: each template's points (and box, if it has one) are denormalised to the image's size and the
  candidate its ``mask_choice`` designates is used: ``"best"`` (highest score) or a candidate index 0..2
  (:func:`imaging.segmenter.choose_candidate`). Every mask is segmented from the ORIGINAL image's embedding.
* ``compose="stack"``: one variant per image; the applicable templates are applied in ``order`` (ties keep
  the given order), each inside its own mask, each blending its opacity against the image as it was before
  that template (which is exactly what :func:`~imaging.edits.apply_edits` does with its input), noise
  component id 1. The variant's mask is the union of the masks, its score their mean, its area the union's
  pixel count. ``compose="each"``: one variant per applicable template, each from the original image.
* No applicable template: both modes return an empty list; the caller decides (the job marks such an image
  as skipped).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from imaging.codecs import DecodedImage
from imaging.edits import Edits, apply_edits
from imaging.points import Point, denormalize, denormalize_box
from imaging.segmenter import Embedding, Prompt, Segmenter, predict_chosen_many

COMPOSE_MODES = ("stack", "each")
#: The component id used for template masks in the dataset flows (EDITS.md: one component, id 1).
TEMPLATE_COMPONENT_ID = 1


def classify_filename(name: str) -> str:
    """Class of an image from its name: "pass" if "pass" occurs in the lower-cased name, elif "fail", else "".

    The whole given string is inspected, so callers choose whether folder names count.
    """
    lower = name.lower()
    if "pass" in lower:
        return "pass"
    if "fail" in lower:
        return "fail"
    return ""


def template_applies(template_class: str, image_class: str) -> bool:
    """A classless template applies everywhere; a classed one to its class and to unclassed images."""
    return not template_class or not image_class or template_class == image_class


@dataclass(frozen=True)
class TemplateSpec:
    """What the pipeline needs of a saved template. ``box``: normalised ``(x0, y0, x1, y1)`` or None
    (:func:`imaging.points.parse_box`); ``mask_choice``: "best" or a candidate index 0..2."""

    id: str
    name: str
    points: tuple[Point, ...]
    image_class: str = ""
    edits: Edits = field(default_factory=Edits)
    order: int = 0
    box: tuple[float, float, float, float] | None = None
    mask_choice: str | int = "best"


@dataclass
class TemplateMask:
    """The mask chosen for one template on one image."""

    template_id: str
    mask: np.ndarray
    score: float
    #: The candidate's stability score when the backend has mask logits (SAM), else None.
    stability: float | None = None


@dataclass
class VariantResult:
    """One output variant: the edited pixels, the union of the masks used, their mean score and the union's
    pixel count.

    ``rgb`` is ``HxWx3`` for a colour source and ``HxW`` (one channel) for a grayscale one, so every encoder
    that can writes a single-channel file (a grayscale PNG/JPEG is a third of an RGB one, and a CV pipeline
    gets the channel count it was given).
    """

    template_ids: tuple[str, ...]
    template_names: tuple[str, ...]
    rgb: np.ndarray
    mask: np.ndarray
    score: float
    area: int


def segment_templates(
    segmenter: Segmenter,
    embedding: Embedding,
    templates: Sequence[TemplateSpec],
    *,
    width: int,
    height: int,
) -> list[TemplateMask]:
    """The mask each template's prompt (points and/or box, denormalised to ``width`` x ``height``) and
    ``mask_choice`` designate on this image, all templates in one :func:`~imaging.segmenter.predict_chosen_many`
    call (only the chosen candidates are upsampled). Raises ValueError for a template with neither points nor
    box."""
    prompts = []
    for template in templates:
        if not template.points and template.box is None:
            raise ValueError(f"template {template.name!r} has no points and no box")
        coords, labels = denormalize(template.points, width, height)
        box = None if template.box is None else denormalize_box(template.box, width, height)
        prompts.append(Prompt(coords=coords, labels=labels, box=box, mask_choice=template.mask_choice))
    chosen = predict_chosen_many(segmenter, embedding, prompts, multimask=True)
    return [
        TemplateMask(
            template_id=template.id,
            mask=candidate.mask,
            score=float(candidate.score),
            stability=getattr(candidate, "stability", None),
        )
        for template, candidate in zip(templates, chosen, strict=True)
    ]


def _ordered(templates: Sequence[TemplateSpec]) -> list[TemplateSpec]:
    return [t for _, t in sorted(enumerate(templates), key=lambda it: (it[1].order, it[0]))]


def output_pixels(rgb: np.ndarray, is_grayscale: bool) -> np.ndarray:
    """The one rule for output channels (the REST job, the seed stream, the legacy endpoints): a grayscale
    source's output as one channel: the edits keep R == G == B on grayscale images, so the
    first channel is the whole image (checked, so a colour-tinted result is never flattened)."""
    if not is_grayscale or rgb.ndim != 3:
        return rgb
    first = rgb[:, :, 0]
    if not (np.array_equal(first, rgb[:, :, 1]) and np.array_equal(first, rgb[:, :, 2])):
        return rgb
    return np.ascontiguousarray(first)


def render_variants(
    image: DecodedImage,
    masks: Sequence[TemplateMask],
    templates: Sequence[TemplateSpec],
    *,
    compose: str = "stack",
) -> list[VariantResult]:
    """Apply the templates' edits inside their masks (see the module docstring for the two modes).

    ``templates`` should already be filtered by class; templates without an entry in ``masks`` are ignored.
    Returns [] when no template remains.
    """
    if compose not in COMPOSE_MODES:
        raise ValueError(f"compose must be one of {', '.join(COMPOSE_MODES)}, got {compose!r}")
    by_id = {m.template_id: m for m in masks}
    shape = (image.height, image.width)
    for m in masks:
        if m.mask.shape != shape:
            raise ValueError(f"mask of template {m.template_id} has shape {m.mask.shape}, image is {shape}")
    chosen = [t for t in _ordered(templates) if t.id in by_id]
    if not chosen:
        return []
    if compose == "each":
        variants = []
        for t in chosen:
            tm = by_id[t.id]
            rgb = apply_edits(
                image.rgb,
                tm.mask,
                t.edits,
                is_grayscale=image.is_grayscale,
                component_id=TEMPLATE_COMPONENT_ID,
            )
            mask = np.ascontiguousarray(tm.mask, dtype=bool)
            variants.append(
                VariantResult(
                    template_ids=(t.id,),
                    template_names=(t.name,),
                    rgb=output_pixels(rgb, image.is_grayscale),
                    mask=mask,
                    score=tm.score,
                    area=int(np.count_nonzero(mask)),
                )
            )
        return variants
    rgb = image.rgb
    union = np.zeros(shape, dtype=bool)
    for t in chosen:
        tm = by_id[t.id]
        rgb = apply_edits(
            rgb, tm.mask, t.edits, is_grayscale=image.is_grayscale, component_id=TEMPLATE_COMPONENT_ID
        )
        union |= tm.mask.astype(bool, copy=False)
    scores = [by_id[t.id].score for t in chosen]
    return [
        VariantResult(
            template_ids=tuple(t.id for t in chosen),
            template_names=tuple(t.name for t in chosen),
            rgb=output_pixels(rgb, image.is_grayscale),
            mask=union,
            score=float(np.mean(scores)),
            area=int(np.count_nonzero(union)),
        )
    ]


def generate_for_image(
    image: DecodedImage,
    embedding: Embedding,
    segmenter: Segmenter,
    templates: Sequence[TemplateSpec],
    *,
    image_class: str,
    compose: str = "stack",
) -> list[VariantResult]:
    """Filter ``templates`` by ``image_class``, segment each from ``embedding`` (of this image), render.

    Returns [] when no template applies.
    """
    if compose not in COMPOSE_MODES:
        raise ValueError(f"compose must be one of {', '.join(COMPOSE_MODES)}, got {compose!r}")
    if tuple(embedding.original_size) != (image.height, image.width):
        raise ValueError("the embedding was computed for an image of a different size")
    applicable = [t for t in templates if template_applies(t.image_class, image_class)]
    if not applicable:
        return []
    masks = segment_templates(segmenter, embedding, applicable, width=image.width, height=image.height)
    return render_variants(image, masks, applicable, compose=compose)
