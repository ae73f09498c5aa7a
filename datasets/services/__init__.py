"""Every write of the datasets app, one module per noun (datasets, images, previews, jobs).

Services are named ``<noun>_<verb>``, take keyword-only typed arguments, validate, write, and schedule
events on commit. Views, the seed-compatible API, the CLI and the job runners all call these.
"""
