"""`m3fm serve`: the HTTP API answers what `m3fm run --json` prints, refuses bad requests with
one line, keeps concurrent requests apart, and gathers them into model batches."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pytest
from batch_fixtures import BATCH, SUBPROCESS_ENV, m3fm, pictures, small_batch_model
from conftest import run_cli
from fastapi.testclient import TestClient
from PIL import Image

from m3fm import __version__
from m3fm.benchmarks import serving as serving_benchmark
from m3fm.serving.app import _suffix, create_app
from m3fm.serving.batching import Batcher

LIMIT_MB = 0.05
"""Upload limit of the test service: every test file fits, 60 kB does not."""

WAIT_MS = 300
"""Long enough on a busy machine for concurrent test requests to meet in one batch."""


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return small_batch_model(tmp_path_factory.mktemp("model") / "m3fm-small")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    return pictures(tmp_path_factory.mktemp("images"), 2 * BATCH)


@pytest.fixture(scope="module")
def client(model):
    with TestClient(create_app(model, max_wait_ms=WAIT_MS, max_upload_mb=LIMIT_MB)) as client:
        yield client


@pytest.fixture
def batch_sizes(client):
    """The size of each batch the service runs during the test."""
    batcher = client.app.state.batcher
    run, sizes = batcher.run, []

    def recording(key, items):
        sizes.append(len(items))
        return run(key, items)

    batcher.run = recording
    yield sizes
    batcher.run = run


def post_run(client, path: Path, name: str | None = None, **form: str) -> httpx.Response:
    return client.post("/v1/run", data={"plugin": "ct", **form},
                       files={"file": (name or path.name, path.read_bytes())})


def test_healthz_names_the_model(client):
    assert client.get("/healthz").json() == {"status": "ok", "model": "m3fm-small",
                                             "m3fm": __version__, "max_batch": BATCH}


def test_plugins_lists_modalities_languages_and_labels(client):
    listed = client.get("/v1/plugins").json()
    ct = next(entry for entry in listed["modalities"] if entry["name"] == "ct")
    assert ".nii.gz" in ct["file_types"] and ct["volumes"] and "covid19" in ct["labels"]
    assert {"en", "zh"} <= {language["code"] for language in listed["languages"]}
    assert "covid19" in {label["id"] for label in listed["labels"]}


@pytest.mark.parametrize("options", [
    {}, {"lang": "zh", "labels": "covid19", "diagnosis_from": "combined"}, {"report": "false"},
])
def test_run_answers_what_m3fm_run_json_prints(client, model, images, capsys, options):
    cli = ["--lang", options.get("lang", "en")]
    cli += ["--labels", options["labels"]] if "labels" in options else []
    cli += ["--diagnosis-from", options["diagnosis_from"]] if "diagnosis_from" in options else []
    cli += ["--no-report"] if options.get("report") == "false" else []
    code, out, err = run_cli(capsys, "run", "--json", "--plugin", "ct", "--checkpoint",
                             str(model), *cli, str(images[0]))
    assert code == 0, err
    expected = json.loads(out) | {"input": "scan one.png"}
    answer = post_run(client, images[0], "scan one.png", **options)
    assert answer.status_code == 200 and answer.json() == expected
    assert {"ood", "ood_score", "ood_threshold"} <= set(expected)  # the bundled model's flag


def test_a_volume_in_nii_gz_is_read_by_its_suffix(client, tmp_path):
    volume = tmp_path / "chest.nii.gz"
    data = np.random.default_rng(0).normal(0, 300, (24, 24, 12)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), volume)
    answer = post_run(client, volume)
    assert answer.status_code == 200 and answer.json()["input"] == "chest.nii.gz"
    preview = client.post("/v1/preview", data={"plugin": "ct"},
                          files={"file": (volume.name, volume.read_bytes())})
    assert preview.headers["content-type"] == "image/png"
    picture = np.asarray(Image.open(io.BytesIO(preview.content)))
    assert picture.ndim == 2 and picture.min() == 0 and picture.max() == 255


def test_preview_shows_the_preprocessed_picture(client, images):
    preview = client.post("/v1/preview", data={"plugin": "cxr"},
                          files={"file": ("x.png", images[0].read_bytes())})
    assert preview.status_code == 200 and preview.headers["content-type"] == "image/png"
    picture = Image.open(io.BytesIO(preview.content))
    assert picture.mode == "L" and picture.size[0] == picture.size[1] > 48  # resized


@pytest.mark.parametrize(("form", "message"), [
    ({"plugin": "mri"}, "unknown modality 'mri'; installed: ct, cxr"),
    ({"lang": "xx"}, "unknown language 'xx'"),
    ({"labels": "covid19,flu"}, "unknown label for modality 'ct': 'flu'"),
    ({"report": "perhaps"}, "report: Input should be a valid boolean"),
    ({"diagnosis_from": "text"}, "diagnosis_from must be one of image, report, combined"),
])
def test_a_bad_request_is_400_with_the_cli_s_line(client, images, form, message):
    answer = post_run(client, images[0], **form)
    assert answer.status_code == 400
    assert answer.json()["error"].startswith(message)


def test_missing_fields_are_named(client):
    answer = client.post("/v1/run", data={"lang": "en"})
    assert answer.status_code == 400
    assert "file: Field required" in answer.json()["error"]
    assert "plugin: Field required" in answer.json()["error"]


def test_a_bad_preview_is_422_naming_the_upload(client):
    answer = client.post("/v1/preview", data={"plugin": "ct"},
                         files={"file": ("broken.dcm", b"not a dicom file")})
    assert answer.status_code == 422
    assert answer.json()["error"].startswith("broken.dcm: ")


@pytest.mark.parametrize("size", [60_000, 200_000])  # passes the limit while copied; declared
def test_an_upload_over_the_limit_is_413(client, size):
    answer = client.post("/v1/run", data={"plugin": "ct"},
                         files={"file": ("big.png", b"\0" * size)})
    assert answer.status_code == 413
    assert answer.json() == {"error": "upload over the limit of 0.05 MB; send a smaller file "
                                      "or start the service with a larger --max-upload-mb"}


def test_a_corrupt_file_fails_alone_and_leaves_no_upload(client, images, tmp_path,
                                                         monkeypatch, batch_sizes):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with ThreadPoolExecutor(2) as pool:
        bad, good = pool.map(lambda path: post_run(client, path), [corrupt, images[1]])
    assert bad.status_code == 422
    assert bad.json()["input"] == "corrupt.png"
    assert bad.json()["error"].startswith("corrupt.png: cannot read it as ct input: ")
    assert "m3fm-serve" not in bad.text
    assert good.status_code == 200 and good.json()["input"] == images[1].name
    assert "report" in good.json()
    assert sum(batch_sizes) == 2
    assert [path.name for path in tmp_path.iterdir()] == ["corrupt.png"]  # uploads removed


def test_concurrent_requests_share_batches_and_get_their_own_results(client, images,
                                                                     batch_sizes):
    alone = [post_run(client, path).json() for path in images]
    assert batch_sizes == [1] * len(images)
    batch_sizes.clear()
    barrier = threading.Barrier(len(images))

    def together(path: Path) -> dict:
        barrier.wait()
        return post_run(client, path).json()

    with ThreadPoolExecutor(len(images)) as pool:
        concurrent = list(pool.map(together, images))
    assert len(batch_sizes) < len(images) and sum(batch_sizes) == len(images)
    assert max(batch_sizes) <= BATCH
    assert [result["input"] for result in concurrent] == [path.name for path in images]
    for one, shared in zip(alone, concurrent, strict=True):
        assert shared["report"] == one["report"]
        assert shared["diagnosis"] == pytest.approx(one["diagnosis"], abs=1e-3)


def test_the_viewer_page_is_served(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert client.get("/nowhere").json() == {"error": "Not Found"}


@pytest.mark.parametrize(("name", "suffix"), [
    ("scan.PNG", ".png"), ("ct.nii.gz", ".nii.gz"), ("a.b.dcm", ".dcm"), ("noext", ""),
    ("x.p/ng", ""), ("../../etc/passwd.png", ".png"), ("x.nii.g z", ""),
])
def test_an_upload_keeps_only_a_plain_suffix(name, suffix):
    assert _suffix(name) == suffix


# --- the batcher alone, with a fake model --------------------------------------------------


def _batched(submissions: list[tuple[str, int]], max_batch: int, max_wait_s: float = 0.05,
             fail_on: int | None = None) -> tuple[list, list[list[int]]]:
    """Submits (key, item) pairs at once; (each outcome, the items of each runner call)."""
    calls: list[list[int]] = []

    def run(key: str, items: list[int]) -> list[str]:
        calls.append(list(items))
        if fail_on in items:
            raise ValueError(f"bad item {fail_on}")
        return [f"{key}:{item}" for item in items]

    async def main():
        with ThreadPoolExecutor(1) as worker:
            batcher = Batcher(run, worker, max_batch=max_batch, max_wait_s=max_wait_s)
            batcher.start()
            try:
                return await asyncio.gather(
                    *(batcher.submit(key, item) for key, item in submissions),
                    return_exceptions=True)
            finally:
                await batcher.stop()

    return asyncio.run(main()), calls


def test_the_batcher_gathers_up_to_max_batch():
    outcomes, calls = _batched([("a", item) for item in range(7)], max_batch=3)
    assert outcomes == [f"a:{item}" for item in range(7)]
    assert calls == [[0, 1, 2], [3, 4, 5], [6]]


def test_the_batcher_never_mixes_keys():
    outcomes, calls = _batched([("a", 0), ("b", 1), ("a", 2), ("b", 3)], max_batch=4)
    assert outcomes == ["a:0", "b:1", "a:2", "b:3"]
    assert calls == [[0, 2], [1, 3]]


def test_a_lone_request_waits_at_most_max_wait():
    started = time.monotonic()
    outcomes, calls = _batched([("a", 0)], max_batch=8, max_wait_s=0.2)
    assert outcomes == ["a:0"] and calls == [[0]]
    assert 0.2 <= time.monotonic() - started < 5


def test_a_failing_batch_is_run_again_item_by_item():
    outcomes, calls = _batched([("a", item) for item in range(3)], max_batch=3, fail_on=1)
    assert outcomes[0] == "a:0" and outcomes[2] == "a:2"
    assert isinstance(outcomes[1], ValueError)
    assert calls == [[0, 1, 2], [0], [1], [2]]


# --- the real command ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_model_that_fails_to_load_is_one_line(capsys, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    code, _, err = run_cli(capsys, "serve", "--port", str(_free_port()), "--checkpoint",
                           str(tmp_path))
    assert code == 1 and "Traceback" not in err
    assert err.endswith(f"m3fm: error: {tmp_path}: not an m3fm alignment checkpoint (no "
                        "model.safetensors)\n")


@pytest.mark.slow
def test_m3fm_serve_answers_over_http(model, images):
    port = _free_port()
    server = subprocess.Popen(m3fm("serve", "--port", str(port), "--checkpoint", str(model)),
                              env=SUBPROCESS_ENV, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, server.stderr.read().decode()
            assert time.monotonic() < deadline, "the service did not start"
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        answer = httpx.post(f"{url}/v1/run", data={"plugin": "ct"}, timeout=240,
                            files={"file": (images[0].name, images[0].read_bytes())})
        assert answer.status_code == 200
        assert answer.json()["input"] == images[0].name and answer.json()["report"]
    finally:
        server.terminate()
        server.wait(timeout=60)


@pytest.mark.slow
def test_the_load_benchmark_checks_every_answer(model, capsys, monkeypatch):
    monkeypatch.delenv("M3FM_DATA", raising=False)  # synthetic images
    serving_benchmark.main(["--checkpoint", str(model), "--requests", "4", "--clients", "2",
                            "--threads", "1", "--json"], standalone_mode=False)
    figures = json.loads(capsys.readouterr().out)
    assert figures["images"] == "synthetic" and figures["answered"] == 4
    assert figures["mismatches"] == [] and figures["concurrent"]["requests_per_s"] > 0
