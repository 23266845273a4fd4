"""`m3fm serve`: the model behind a local HTTP API (:mod:`m3fm.serving`).

FastAPI, uvicorn and torch are imported only when the verb runs, so that `m3fm --help` stays
fast.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from m3fm.cli.app import ModelFolder, cli
from m3fm.serving import DEFAULT_MAX_UPLOAD_MB, DEFAULT_MAX_WAIT_MS


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; the default answers this machine only. The service "
              "has no authentication: put a reverse proxy with one in front before exposing it.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="TCP port to listen on.")
@click.option("--checkpoint", type=ModelFolder(),
              help="Model directory (or a training run's folder, for its final/); default: "
              "the bundled m3fm-small model.")
@click.option("--max-batch", type=click.IntRange(min=1),
              help="Most requests decoded together; default: the model's decode.batch_size.")
@click.option("--max-wait-ms", type=click.FloatRange(min=0), default=DEFAULT_MAX_WAIT_MS,
              show_default=True,
              help="How long a request waits for others to share its batch.")
@click.option("--max-upload-mb", type=click.FloatRange(min=0, min_open=True),
              default=DEFAULT_MAX_UPLOAD_MB,
              show_default=True, help="Largest file a request may upload, in MB; larger is "
              "refused with 413.")
def serve(host: str, port: int, checkpoint: Path | None, max_batch: int | None,
          max_wait_ms: float, max_upload_mb: float) -> None:
    """Serve the model over HTTP: `POST /v1/run` answers what `m3fm run --json` prints for an
    uploaded image, `POST /v1/preview` shows it as the model sees it, `GET /` is a viewer.

    The model is loaded once, at start-up; requests that ask for the same analysis at the
    same time are decoded together. Stop it with Ctrl-C. See docs/serving.md.
    """
    import uvicorn

    from m3fm.serving.app import create_app

    app = create_app(checkpoint, max_batch=max_batch, max_wait_ms=max_wait_ms,
                     max_upload_mb=max_upload_mb)
    # a model that fails to load is m3fm's one-line error, not uvicorn's traceback of it
    logging.getLogger("uvicorn.error").addFilter(
        lambda record: not (hasattr(app.state, "startup_error")
                            and record.getMessage().startswith("Traceback")))
    try:
        uvicorn.run(app, host=host, port=port, log_level="info")
    except SystemExit:
        if hasattr(app.state, "startup_error"):
            raise app.state.startup_error from None
        raise
