"""Which of a dataset's templates a request names, with their edits: one parser for every interface.

The accepted shapes are the union of what the REST API, the jobs API, the seed-compatible API and the pages
accept:

- ``templates: [id | {"template_id" | "id": id, "edits": {...}}]``: the listed templates, in the order given;
- ``edits: {template_id: {...}}`` (the seed API's map): edits for those templates, which are added to the
  selection when not listed (a listed entry with its own edits keeps them);
- ``edits: {"brightness": ..., ...}`` (keys are edit fields, not ids): those edits for every selected
  template, or every template of the dataset when none is listed.

``edits`` None means the template's saved default edits. Templates are looked up in ``dataset.templates``
(this module never imports templates_app), so a template of another dataset is "not found".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from datasets.models import Dataset
from datasets.prompts import check_templates_per_preview, edits_from_input
from imaging.edits import EDIT_FIELDS
from samsite.common.db import parse_uuid
from samsite.common.errors import ServiceError

#: ``(template, edits)``; the template is a ``templates_app.models.Template`` of the dataset.
Selected = tuple[Any, Mapping | None]

NotFound = Callable[[object, int | None], ServiceError]


def templates_from_input(
    dataset: Dataset,
    templates: object = None,
    edits: object = None,
    *,
    invalid_code: str = "invalid_template",
    not_found: NotFound | None = None,
    limit: Callable[[int], None] | None = check_templates_per_preview,
    validate_edits: bool = False,
    merge_duplicates: bool = False,
) -> list[Selected] | None:
    """Parse a template selection (see the module docstring) from untrusted ``templates`` and ``edits``.

    Returns the ``(template, edits)`` pairs in request order, ``[]`` for an explicitly empty list, or None when
    the request names no template (``templates`` and ``edits`` absent, None or ``""``): the caller decides
    what "none named" means (usually every template with its default edits).

    Errors are ServiceError, with the codes the caller's interface uses:

    - ``invalid_code`` (400, ``field="templates"``, with ``index`` for an entry): ``templates`` is not a list,
      an entry is not an id or an object, or has no id; ``invalid_edits`` (``field="edits"``) when ``edits``
      is not an object;
    - ``not_found(template_id, index)`` builds the error for an id that is not one of the dataset's templates
      (``index`` None for a key of the ``edits`` map); default: ``invalid_code`` with ``field="templates"``;
    - ``limit(count)`` is called with the length of ``templates`` and of the ``edits`` map (default
      ``check_templates_per_preview``: ``too_many_templates``); None: no limit here;
    - ``validate_edits``: each entry's edits are checked now (``invalid_edits`` with the entry's ``index``
      and the bad ``field``) instead of by the service that uses them.

    ``merge_duplicates``: a template listed twice is one entry, the later edits winning (the seed API);
    otherwise every entry is kept (the jobs service refuses duplicates with its own code).
    """
    not_found = not_found or _not_in_dataset(invalid_code)
    chosen: list[Selected] = []
    if templates not in (None, ""):
        if not isinstance(templates, list):
            raise ServiceError(invalid_code, "templates must be a list of {id, edits}", field="templates")
        if limit is not None:
            limit(len(templates))
        for index, entry in enumerate(templates):
            template_id, entry_edits = _entry(entry, index, invalid_code)
            template = _template(dataset, template_id, index, not_found)
            if validate_edits and entry_edits is not None:
                edits_from_input(entry_edits, index=index)
            _add(chosen, (template, entry_edits), replace=merge_duplicates)
    if edits in (None, ""):
        return chosen if templates not in (None, "") else None
    if not isinstance(edits, Mapping):
        raise ServiceError("invalid_edits", "edits must be an object keyed by template_id", field="edits")
    if limit is not None:
        limit(len(edits))
    if edits and all(key in EDIT_FIELDS for key in edits):
        targets = [template for template, _ in chosen] or list(dataset.templates.order_by("position"))
        return [(template, edits) for template in targets]
    for template_id, template_edits in edits.items():
        template = _template(dataset, template_id, None, not_found)
        if not any(t.pk == template.pk and e is not None for t, e in chosen):
            _add(chosen, (template, template_edits), replace=True)
    return chosen


def _not_in_dataset(code: str) -> NotFound:
    def error(template_id: object, index: int | None) -> ServiceError:
        where = {"index": index} if index is not None else {"template_id": str(template_id)}
        return ServiceError(code, "not a template of this dataset", field="templates", **where)

    return error


def _entry(entry: object, index: int, invalid_code: str) -> tuple[object, Mapping | None]:
    if isinstance(entry, str):
        template_id, entry_edits = entry, None
    elif isinstance(entry, Mapping):
        template_id, entry_edits = entry.get("template_id") or entry.get("id"), entry.get("edits")
    else:
        raise ServiceError(
            invalid_code, "a template entry must be an id or an object", field="templates", index=index
        )
    if not template_id:
        raise ServiceError(invalid_code, "template_id is required", field="templates", index=index)
    return template_id, entry_edits


def _template(dataset: Dataset, template_id: object, index: int | None, not_found: NotFound):
    pk = parse_uuid(template_id)
    template = dataset.templates.filter(pk=pk).first() if pk else None
    if template is None:
        raise not_found(template_id, index)
    return template


def _add(chosen: list[Selected], pair: Selected, *, replace: bool) -> None:
    """Append ``pair``; with ``replace``, an entry of the same template is replaced in place instead."""
    if replace:
        for position, (template, _) in enumerate(chosen):
            if template.pk == pair[0].pk:
                chosen[position] = pair
                return
    chosen.append(pair)
