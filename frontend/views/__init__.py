"""HTML pages, one module per step of the UI. Thin: parse, call one service or selector, render.

- ``datasets``: the datasets list and step 1 (upload, image classes);
- ``templates``: step 2 (the template canvas, segment previews, saved templates, the segmenter help);
- ``edits``: step 3 (edit sliders, the edit preview, Generate);
- ``jobs``: the job history, the job page and its live stream;
- ``shared``: the few helpers several steps use.

Every object comes through the ownership accessors (``dataset_get_for_user`` and friends), so another user's
id answers 404 exactly like a missing one. htmx requests get fragments, plain requests full pages or
redirects (so every form also works without JavaScript).
"""
