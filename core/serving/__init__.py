"""`m3fm serve`: the model behind an HTTP API, loaded once, with dynamic batching.

:func:`m3fm.serving.app.create_app` builds the FastAPI application;
:mod:`m3fm.serving.batching` gathers concurrent requests into model batches.
"""

DEFAULT_MAX_WAIT_MS = 5.0
"""How long a request waits for others to share its batch: small against a model call."""

DEFAULT_MAX_UPLOAD_MB = 256.0
"""Largest upload, in MB (10^6 bytes): a 512 x 512 x 384 CT volume of 16-bit voxels fits."""
