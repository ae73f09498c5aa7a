"""Helpers every app uses: errors and their HTTP mapping, DRF glue, JSON parsing, shared fields, model bases."""
