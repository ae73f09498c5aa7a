"""The imaging core: codecs, edits, point prompts, segmenters (SAM and classical), embedding cache and the
variant pipeline. Pure Python over numpy/OpenCV/Pillow/torch; it never imports Django.

Submodules are imported explicitly (``from imaging.edits import apply_edits``); importing the package itself
is cheap and loads no model (torch is only imported by :mod:`imaging.sam` and :mod:`imaging.tiny_sam`).
"""
