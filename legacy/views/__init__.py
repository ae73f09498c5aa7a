"""The seed-compatible endpoints (``shared/design/SEED_API.md``), one module per flow: ``dataset_flow``,
``single_image``, ``batch``; the old request and response shapes they share are in ``legacy.wire``."""
