"""kner serve: the HTTP API answers exactly what the models predict, refuses bad requests clearly,
and stays correct under many parallel clients on a real socket."""
from __future__ import annotations

import contextlib
import json
import random
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from conftest import ODD_TEXTS, OVERFIT

from kner import load
from kner.align import to_markup
from kner.data import load_split
from kner.models.crf import CRFTagger
from kner.serve import create_app, load_models

pytestmark = pytest.mark.slow  # trains neural models or starts servers: `pytest -m "not slow"` skips them


@pytest.fixture(scope="session")
def crf_runs(tmp_path_factory, klue_dir):
    """Two small CRF run directories that disagree on some sentences (100 vs 300 KLUE sentences)."""
    train = load_split("train", klue_dir, limit=300) + OVERFIT
    root = tmp_path_factory.mktemp("serve-models")
    runs = []
    for name, n, f1 in (("crf-300", 300, 0.61), ("crf-100", 100, 0.42)):
        tagger = CRFTagger(max_iterations=60).fit(train[-n - len(OVERFIT):])
        runs.append(tagger.save(root / name, metrics={"f1": f1, "n_train": n}))
    return runs


@pytest.fixture(scope="session")
def served(crf_runs):
    return load_models(crf_runs)


@pytest.fixture
def client(served):
    with TestClient(create_app(served, max_chars=2000, max_batch=8)) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def dev_texts(klue_dir):
    return [ex.text for ex in load_split("dev", klue_dir, limit=120)]


@contextlib.contextmanager
def running_server(app, timeout: float = 20.0):
    """A real uvicorn on a random loopback port, in a thread; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_keep_alive=30))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()


def expected(models, texts, names=None):
    """What /predict must answer, computed by calling each model directly."""
    out = []
    for m in models:
        if names is None or m.name in names:
            spans = m.tagger.predict(texts)
            out.append({"model": m.name, "family": m.tagger.family, "results": [
                {"text": t, "spans": [s.to_dict(t) for s in ss], "markup": to_markup(t, ss)}
                for t, ss in zip(texts, spans)]})
    return out


def without_latency(body):
    """The per-model answers with the (varying) latency removed, after checking it is a number."""
    for m in body["models"]:
        assert isinstance(m.pop("latency_ms"), float)
    return body["models"]


def test_models_are_named_after_their_folders_and_deduplicated(crf_runs):
    names = [m.name for m in load_models([crf_runs[0], crf_runs[1], crf_runs[0]])]
    assert names == ["crf-300", "crf-100", "crf-300-2"]


def test_a_model_is_loaded_once_and_predicts_like_kner_load(served, crf_runs, dev_texts):
    assert served[0].tagger.predict(dev_texts) == load(crf_runs[0]).predict(dev_texts)


def test_one_text_is_answered_by_every_model_by_default(client, served):
    text = OVERFIT[0].text
    response = client.post("/predict", json={"text": text})
    assert response.status_code == 200
    assert without_latency(response.json()) == expected(served, [text])


def test_a_batch_with_odd_texts_is_answered_in_order_with_exact_spans(client, served):
    texts = [t for t in ODD_TEXTS if len(t) <= 2000] + [ex.text for ex in OVERFIT[:2]]
    got = without_latency(client.post("/predict", json={"texts": texts, "model": None}).json())
    assert got == expected(served, texts)
    for model in got:
        for text, result in zip(texts, model["results"]):
            assert all(text[s["start"]:s["end"]] == s["text"] for s in result["spans"])


def test_model_and_models_choose_which_models_answer(client, served):
    text = OVERFIT[3].text
    one = client.post("/predict", json={"text": text, "model": "crf-100"}).json()
    assert without_latency(one) == expected(served, [text], {"crf-100"})
    some = client.post("/predict", json={"text": text, "models": ["crf-100", "crf-300"]}).json()
    assert [m["model"] for m in some["models"]] == ["crf-100", "crf-300"]


def test_get_predict_is_a_shareable_link_to_the_same_json(client, served):
    text = OVERFIT[1].text
    got = client.get("/predict", params={"text": text, "model": "crf-300"})
    posted = client.post("/predict", json={"text": text, "model": "crf-300"})
    assert without_latency(got.json()) == without_latency(posted.json())


def test_models_lists_family_and_dev_f1_from_kner_json(client):
    body = client.get("/models").json()
    assert [(m["name"], m["family"], m["dev_f1"], m["n_train"], m["backend"]) for m in body["models"]] == [
        ("crf-300", "crf", 0.61, 300, "native"), ("crf-100", "crf", 0.42, 100, "native")]
    assert (body["max_chars"], body["max_batch"]) == (2000, 8)
    assert client.get("/health").json()["status"] == "ok"


@pytest.mark.parametrize("payload, words", [
    ({"text": "가" * 2001}, ["text 0", "2001 characters", "2000"]),
    ({"texts": ["가"] * 9}, ["9 texts", "limit of 8"]),
    ({"texts": ["짧다", "나" * 2500]}, ["text 1", "2500 characters"]),
])
def test_texts_over_the_limits_get_413_saying_which_limit(client, payload, words):
    response = client.post("/predict", json=payload)
    assert response.status_code == 413
    assert all(w in response.json()["detail"] for w in words)


def test_a_body_larger_than_any_valid_request_is_refused_before_parsing(client):
    response = client.post("/predict", content=b"{" + b" " * 200_000 + b"}", headers={"content-type": "application/json"})
    assert response.status_code == 413 and "body" in response.json()["detail"]


@pytest.mark.parametrize("payload", [
    b"{not json", b'"just a string"', b'{"text": 5}', b'{"texts": "not a list"}', b'{"texts": [1, 2]}',
    b"{}", b'{"text": "a", "texts": ["b"]}', b'{"text": "a", "model": "crf-100", "models": ["crf-300"]}',
    b'{"text": "a", "models": []}', b'{"text": "a", "colour": "red"}',
])
def test_malformed_requests_get_422(client, payload):
    response = client.post("/predict", content=payload, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text


def test_an_unknown_model_gets_404_listing_the_loaded_ones(client):
    response = client.post("/predict", json={"text": "서울", "models": ["crf-300", "bert"]})
    assert response.status_code == 404
    assert "'bert'" in response.json()["detail"] and "crf-300, crf-100" in response.json()["detail"]


def test_openapi_documents_the_request_and_response_models(client):
    spec = client.get("/openapi.json").json()
    post = spec["paths"]["/predict"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/PredictRequest")
    assert post["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/PredictResponse")
    assert {"404", "413", "422"} <= set(post["responses"])
    schemas = spec["components"]["schemas"]
    assert set(schemas["PredictRequest"]["properties"]) == {"text", "texts", "model", "models"}
    assert set(schemas["SpanOut"]["properties"]) == {"start", "end", "label", "text"}
    assert {"latency_ms", "results"} <= set(schemas["ModelResult"]["properties"])
    assert spec["paths"]["/models"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ModelsResponse")


def test_the_page_and_its_assets_are_served_without_outside_references(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/web/app.js", "/web/style.css"):
        assert client.get(asset).status_code == 200
    combined = page.text + client.get("/web/app.js").text + client.get("/web/style.css").text
    assert "http://" not in combined and "https://" not in combined
    assert ".innerHTML" not in client.get("/web/app.js").text


def test_parallel_clients_on_a_real_socket_all_get_the_direct_prediction(served, dev_texts):
    """32 threads x 8 requests, mixed single texts, batches and model choices, against uvicorn on loopback."""
    threads, rng = 32, random.Random(0)
    jobs = []
    for _ in range(threads * 8):
        texts = rng.sample(dev_texts, rng.choice([1, 1, 3, 8]))
        names = rng.choice([None, ["crf-300"], ["crf-100"]])
        jobs.append(({"texts": texts, "models": names}, expected(served, texts, names)))

    # httpcore 1.0 closes "surplus" idle connections outside its pool lock, and it counts every
    # connection as surplus once there are more than max_keepalive_connections (default 20), so with
    # 32 threads it can close a connection another thread was just handed (EBADF on its read).
    # A keep-alive pool as large as the thread count keeps that client-side race out of the test.
    limits = httpx.Limits(max_keepalive_connections=threads)
    with running_server(create_app(served)) as url, httpx.Client(base_url=url, timeout=60, limits=limits) as http:
        def call(job):
            payload, want = job
            response = http.post("/predict", content=json.dumps(payload), headers={"content-type": "application/json"})
            return response.status_code, without_latency(response.json()) if response.status_code == 200 else response.text, want

        with ThreadPoolExecutor(max_workers=threads) as pool:
            answers = list(pool.map(call, jobs))
    assert [status for status, _, _ in answers] == [200] * len(jobs)
    assert all(got == want for _, got, want in answers)


def test_kner_serve_command_serves_the_run_dirs_on_loopback_with_its_limits(crf_runs, monkeypatch):
    from kner.cli import main

    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port: started.update(app=app, host=host, port=port))
    main(["serve", str(crf_runs[0]), str(crf_runs[1]), "--port", "8123", "--max-chars", "100", "--max-batch", "2"])
    assert (started["host"], started["port"]) == ("127.0.0.1", 8123)
    with TestClient(started["app"]) as http:
        body = http.get("/models").json()
        assert [m["name"] for m in body["models"]] == ["crf-300", "crf-100"]
        assert (body["max_chars"], body["max_batch"]) == (100, 2)
        assert http.post("/predict", json={"texts": ["가", "나", "다"]}).status_code == 413


def test_kner_serve_of_a_folder_that_is_not_a_model_exits_with_a_message(tmp_path):
    from kner.cli import main

    with pytest.raises(SystemExit, match="kner serve: .*kner.json"):
        main(["serve", str(tmp_path)])


def test_kner_serve_applies_runtime_flags_to_the_models_whose_family_has_them(crf_runs, tmp_path, overfit_examples,
                                                                                monkeypatch):
    from builders.bilstm_crf import make

    from kner.cli import main

    bilstm = make(tmp_path, None).fit(overfit_examples).save(tmp_path / "bilstm")
    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port: started.update(app=app))
    loaded = []
    monkeypatch.setattr("kner.serve.create_app", lambda models, **kw: loaded.extend(models))
    main(["serve", str(crf_runs[0]), str(bilstm), "--precision", "bf16"])
    crf, lstm = (m.tagger for m in loaded)
    assert lstm.config.precision == "bf16" and not hasattr(crf.config, "precision")
