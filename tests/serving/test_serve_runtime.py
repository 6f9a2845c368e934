"""The web service on the torch-free runtime: in a process that cannot import torch, the default
model (with its encoder.onnx) answers POST /caption with the pinned captions of examples/,
encoding each request on its own or whole batches, and torch is never imported."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from support.blocked import blocker
from support.inference import EXAMPLES, REPO
from support.runtime import default_with_encoder

pytest.importorskip("fastapi")
pytest.importorskip("httpx")  # fastapi's TestClient

EXPECTED = REPO / "tests" / "expected" / "default_model_captions.json"

SERVE = """
import json, pathlib
from concurrent.futures import ThreadPoolExecutor
from fastapi.testclient import TestClient
import rnncap
from rnncap.serving.app import ServeConfig, create_app

captioner = rnncap.load(sys.argv[1])
paths = sorted(pathlib.Path(sys.argv[2]).glob("*.jpg"))
files = [("file", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]
out = {}
for per_request in (True, False):
    config = ServeConfig(encode_per_request=per_request, timeout=300, max_batch=4)
    with TestClient(create_app(captioner, config)) as client:
        together = client.post("/caption?attention=1", files=files).json()["results"]
        with ThreadPoolExecutor(len(files)) as pool:
            alone = list(pool.map(lambda f: client.post("/caption", files=[f]).json(), files))
        health = client.get("/healthz").json()
    out[str(per_request)] = {
        "backend": health["backend"],
        "per_request": health["config"]["encode_per_request"],
        "together": {r["image"]: r["caption"] for r in together},
        "alone": {r["results"][0]["image"]: r["results"][0]["caption"] for r in alone},
        "attention_rows": [len(r["attention"]) == len(r["words"]) for r in together],
    }
assert not any(m.split(".")[0] == "torch" for m in sys.modules)
print(json.dumps(out))
"""


@pytest.mark.slow
def test_serving_without_torch_gives_the_pinned_captions(tmp_path_factory):
    model = default_with_encoder(tmp_path_factory.mktemp("runtime"))
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            blocker(["torch", "torchvision"]) + SERVE,
            str(model),
            str(EXAMPLES),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    pinned = json.loads(EXPECTED.read_text(encoding="utf-8"))["captions"]
    for per_request, result in json.loads(run.stdout).items():
        assert result["backend"] == "runtime"
        assert str(result["per_request"]) == per_request
        assert result["together"] == pinned and result["alone"] == pinned
        assert all(result["attention_rows"])


def test_the_runtime_search_runs_on_the_search_threads_of_blas():
    """The runtime's NumPy search runs on ServeConfig.search_threads BLAS threads (OpenBLAS's
    spinning threads would take the cores of the encoder calls beside it), all of them with
    None, and BLAS has its threads back after each search."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import numpy as np

    from rnncap.serving.calls import batch_runner

    def blas_threads() -> set[int]:
        info = threadpoolctl.threadpool_info()
        return {i["num_threads"] for i in info if i["user_api"] == "blas"}

    seen = []

    class Runtime:  # a captioner on the runtime: no torch model
        model = None

        def caption_features(self, features, options, names, logits):
            seen.append(blas_threads())
            return names

    before = blas_threads()
    for threads in (1, None):
        run = batch_runner(Runtime(), None, threads, encodes=False)
        assert run(np.zeros((2, 8), np.float32), ["a", "b"]) == ["a", "b"]
        assert blas_threads() == before
    assert seen == [{1} if before else set(), before]
