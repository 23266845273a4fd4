"""The m3fm HTTP service: the model loaded once, `m3fm run` on uploaded files.

``POST /v1/run`` answers with exactly the JSON object ``m3fm run --json`` prints for the file;
requests asking for the same analysis at the same time are decoded together
(:mod:`m3fm.serving.batching`) on one worker thread, the only thread that runs the model.
Errors are ``{"error": "<the line the CLI prints>"}``: 400 for a wrong request (an unknown
plugin, language or label, a bad form value), 413 for an upload over the size limit, 422 for
an input m3fm cannot use, 500 for anything unexpected; never a traceback.  Run it with
`m3fm serve`; it has no authentication of its own (docs/serving.md).
"""

from __future__ import annotations

import asyncio
import io
import shutil
import tempfile
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Annotated

import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.exceptions import HTTPException

from m3fm import __version__
from m3fm.analysis import (
    Analysis,
    analyse_inputs,
    model_validation,
    requested_analysis,
    split_labels,
)
from m3fm.cli.models import load_model
from m3fm.diagnosis import SOURCES
from m3fm.generation import DecodeConfig
from m3fm.imaging import preprocess
from m3fm.models import default_model_dir
from m3fm.outputs import json_text, shown_path
from m3fm.registry import M3fmError, ModalitySpec, UsageError, get_registry
from m3fm.serving import DEFAULT_MAX_UPLOAD_MB, DEFAULT_MAX_WAIT_MS
from m3fm.serving.batching import Batcher

STATIC = Path(__file__).parent / "static"
"""The viewer page (``GET /``) and its files (``/static``)."""

FORM_OVERHEAD = 64 * 1024
"""Bytes of a request body allowed beyond the file: the form fields and multipart framing."""

CHUNK = 1024 * 1024
"""Bytes an upload is copied to disk at a time."""


@dataclass(frozen=True)
class Upload:
    """A request's file on disk (`path`, under a private folder) and the name it was sent as."""

    path: Path
    name: str

    def named(self, text: str) -> str:
        """`text` (a result's input, an error message) naming the upload instead of its path."""
        return text.replace(str(self.path), self.name)


class Service:
    """The loaded model and how it runs a batch of uploads; used from the worker thread only."""

    def __init__(self, model_dir: Path | None, max_batch: int | None) -> None:
        self.validation = model_validation(model_dir)  # read once, not per request
        self.name = (model_dir or default_model_dir()).name
        self.model = load_model(model_dir, reports=False)
        decode = getattr(self.model, "decode", DecodeConfig())
        self.max_batch = max_batch or decode.batch_size
        # a gathered batch is one model batch, whatever the model's own batch size
        self.decode = decode.model_copy(update={"batch_size": self.max_batch})

    def run(self, analysis: Analysis, uploads: Sequence[Upload]) -> list[dict]:
        """`m3fm run`'s result for each upload, in order (``{"input", "error"}`` for one that
        cannot be read); ``input`` is the name the file was sent as."""
        found = {result["input"]: result for result in analyse_inputs(
            self.model, [upload.path for upload in uploads], analysis, self.decode)}
        return [_renamed(found[str(upload.path)], upload) for upload in uploads]


def _renamed(result: dict, upload: Upload) -> dict:
    named = {**result, "input": upload.name}
    if "error" in result:
        named["error"] = upload.named(result["error"])
    return named


def create_app(model_dir: Path | None = None, *, max_batch: int | None = None,
               max_wait_ms: float = DEFAULT_MAX_WAIT_MS,
               max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB) -> FastAPI:
    """The service for the model in `model_dir` (None: the bundled one), loaded at start-up.

    `max_batch` (None: the model's ``decode.batch_size``) requests are decoded together at
    most, after waiting at most `max_wait_ms` for others; an upload may hold `max_upload_mb`.
    """
    limit = int(max_upload_mb * 1_000_000)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="m3fm-model")
        loop = asyncio.get_running_loop()
        try:
            service = await loop.run_in_executor(worker, Service, model_dir, max_batch)
        except M3fmError as error:
            app.state.startup_error = error  # for `m3fm serve` to report as one line
            worker.shutdown()
            raise
        batcher = Batcher(service.run, worker, max_batch=service.max_batch,
                          max_wait_s=max_wait_ms / 1000)
        app.state.service, app.state.batcher, app.state.worker = service, batcher, worker
        batcher.start()
        try:
            yield
        finally:
            await batcher.stop()
            worker.shutdown(wait=True)

    app = FastAPI(title="m3fm", version=__version__, lifespan=lifespan)
    app.add_middleware(BodyLimit, limit=limit + FORM_OVERHEAD)
    _add_error_handlers(app)

    @app.get("/healthz")
    async def healthz(request: Request) -> dict:
        """Liveness, and which model and release answer."""
        service: Service = request.app.state.service
        return {"status": "ok", "model": service.name, "m3fm": __version__,
                "max_batch": service.max_batch}

    @app.get("/v1/plugins")
    def plugins() -> dict:
        """The installed modalities (file types, labels), languages and labels."""
        return installed_plugins()

    @app.post("/v1/run")
    async def run(request: Request, file: Annotated[UploadFile, File()],
                  plugin: Annotated[str, Form()], lang: Annotated[str, Form()] = "en",
                  labels: Annotated[str | None, Form()] = None,
                  report: Annotated[bool, Form()] = True,
                  diagnosis_from: Annotated[str, Form()] = "image") -> Response:
        """`m3fm run --json` on the uploaded file: its one JSON object."""
        if diagnosis_from not in SOURCES:
            raise UsageError(f"diagnosis_from must be one of {', '.join(SOURCES)}, "
                             f"not {diagnosis_from!r}")
        service: Service = request.app.state.service
        analysis = requested_analysis(plugin, lang, split_labels(labels), report=report,
                                      diagnosis_from=diagnosis_from,
                                      validation=service.validation)
        async with received(file, limit) as upload:
            try:
                result = await request.app.state.batcher.submit(analysis, upload)
            except M3fmError as error:
                return _error(_status(error), upload.named(str(error)))
        return Response(json_text(result), status_code=422 if "error" in result else 200,
                        media_type="application/json")

    @app.post("/v1/preview")
    async def preview(request: Request, file: Annotated[UploadFile, File()],
                      plugin: Annotated[str, Form()]) -> Response:
        """The input as the model sees it, as a PNG: preprocessed (windowed) by the
        modality plugin, the middle slice of a volume."""
        spec = get_registry().modality(plugin)
        loop = asyncio.get_running_loop()
        async with received(file, limit) as upload:
            try:
                png = await loop.run_in_executor(request.app.state.worker, preview_png, spec,
                                                 upload.path)
            except M3fmError as error:
                return _error(_status(error), upload.named(str(error)))
        return Response(png, media_type="image/png")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def installed_plugins() -> dict:
    """What ``GET /v1/plugins`` lists: each modality with its file types and labels, each
    language, and each label with its description and modalities."""
    registry = get_registry()
    modalities = []
    for name in registry.names("modality"):
        spec = registry.modality(name)
        modalities.append({"name": name, "description": spec.description,
                           "file_types": list(spec.file_types),
                           "volumes": spec.volume_shape is not None,
                           "labels": list(registry.modality_labels(name))})
    languages = [{"code": code, "name": registry.language(code).name}
                 for code in registry.names("language")]
    labels = []
    for label_id in registry.label_ids():
        label = registry.label(label_id)
        labels.append({"id": label_id, "description": label.description,
                       "modalities": list(label.modalities)})
    return {"modalities": modalities, "languages": languages, "labels": labels}


def preview_png(spec: ModalitySpec, path: Path) -> bytes:
    """`path` preprocessed by `spec` (as the model gets it), its first channel scaled to
    0-255, the middle slice of a volume, as PNG bytes."""
    image = preprocess(spec, path)[0]
    if image.ndim == 3:
        image = image[image.shape[0] // 2]
    low, high = image.min(), image.max()
    scaled = ((image - low) / (high - low).clamp_min(1e-12) * 255).round()
    buffer = io.BytesIO()
    Image.fromarray(scaled.numpy().astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@asynccontextmanager
async def received(file: UploadFile, limit: int) -> AsyncIterator[Upload]:
    """The upload in a private folder of its own (removed afterwards), under a fixed name
    with the suffix it was sent with, since m3fm's loaders go by suffix; a file over `limit`
    bytes is a 413 as soon as the copy passes it."""
    name = _base_name(file.filename or "upload")
    folder = Path(tempfile.mkdtemp(prefix="m3fm-serve-"))
    try:
        path = folder / f"upload{_suffix(name)}"
        size = 0
        with path.open("wb") as out:
            while chunk := await file.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise HTTPException(413, _too_large(limit))
                out.write(chunk)
        yield Upload(path, name)
    finally:
        await file.close()
        shutil.rmtree(folder, ignore_errors=True)


def _base_name(name: str) -> str:
    """The file name a client sent, without any folders (of either kind of path)."""
    return PureWindowsPath(PurePosixPath(name).name).name or "upload"


def _suffix(name: str) -> str:
    """``.png``, ``.nii.gz``: the file type of `name`, kept only if it is plain letters and
    digits (the name itself never reaches the file system)."""
    suffixes = PurePosixPath(name.lower()).suffixes
    suffix = "".join(suffixes[-2:] if suffixes[-1:] == [".gz"] else suffixes[-1:])
    return suffix if suffix.replace(".", "").isalnum() and len(suffix) <= 16 else ""


def _too_large(limit: int) -> str:
    return (f"upload over the limit of {limit / 1_000_000:g} MB; send a smaller file or "
            "start the service with a larger --max-upload-mb")


class BodyLimit:
    """Refuses a request body over `limit` bytes with 413 before it is read: at once when its
    Content-Length says so, else as soon as the bytes received pass the limit (the form parser
    would otherwise spool all of it)."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            response = _error(413, _too_large(self.limit - FORM_OVERHEAD))
            await response(scope, receive, send)
            return
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:  # raised inside the endpoint, answered by its handler
                raise HTTPException(413, _too_large(self.limit - FORM_OVERHEAD))
            return message

        await self.app(scope, counted, send)


def _error(status: int, message: str) -> JSONResponse:
    """The answer to a failed request: the one line the CLI would print."""
    return JSONResponse({"error": shown_path(" ".join(message.split()))}, status_code=status)


def _status(error: M3fmError) -> int:
    """400 for what the request got wrong (the CLI's exit code 2), 422 for the rest."""
    return 400 if isinstance(error, UsageError) else 422


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(M3fmError)
    async def m3fm_error(request: Request, error: M3fmError) -> JSONResponse:
        return _error(_status(error), str(error))

    @app.exception_handler(RequestValidationError)
    async def bad_form(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(part) for part in problem['loc'][1:]) or 'request'}: "
                    f"{problem['msg']}" for problem in error.errors()]
        return _error(400, "; ".join(problems))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return _error(error.status_code, str(error.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        from m3fm.cli import OUT_OF_MEMORY

        if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
            return _error(500, OUT_OF_MEMORY)
        return _error(500, f"internal error: {type(error).__name__}: {error}")
