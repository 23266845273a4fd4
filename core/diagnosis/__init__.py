"""Diagnosis: zero-shot from label prompts, from generated reports, and linear probes.

Light to import: the modules that need torch or scikit-learn load them when used.
"""

SOURCES = ("image", "report", "combined")
"""What a zero-shot diagnosis is read from: the image, the generated report, or both (mean)."""
