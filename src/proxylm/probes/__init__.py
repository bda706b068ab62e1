"""Probes: measurements of compressors and models that are neither training nor evaluation proper.

- `stability`: how much a compressor's output changes when a few characters of its input do.
- `collisions`: distinct raw chunks that the neural proxy maps to one window symbol.
"""
