"""kner push: the model card says what the model is, how well it does and where its data comes from,
and the upload sends exactly the model files plus the card, never touching the network in tests."""
from __future__ import annotations

import json

import httpx
import pytest
from conftest import OVERFIT
from huggingface_hub import ModelCard
from huggingface_hub.errors import HfHubHTTPError

from kner.cli import main
from kner.hub import PushError, model_card, plan, push
from kner.models.crf import CRFTagger

METRICS = {
    "f1": 0.8217, "precision": 0.8434, "recall": 0.8011, "klue_entity_macro_f1": 0.8170, "klue_char_macro_f1": 0.8756,
    "per_type": {t: {"precision": 0.9, "recall": 0.8, "f1": 0.847, "support": 10 + i}
                 for i, t in enumerate(["PS", "LC", "OG", "DT", "TI", "QT"])},
    "n_train": 21003, "n_dev": 5000,
}


class FakeApi:
    """Records what kner asks of the Hub instead of sending it."""

    def __init__(self, fail: bool = False):
        self.calls, self.fail = [], fail

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        return f"https://huggingface.co/{repo_id}"

    def create_commit(self, repo_id, operations, **kwargs):
        if self.fail:
            request = httpx.Request("POST", f"https://huggingface.co/api/models/{repo_id}/commit/main")
            raise HfHubHTTPError("403 Forbidden: you do not have write access",
                                 response=httpx.Response(403, request=request))
        self.calls.append(("create_commit", repo_id, {"operations": list(operations), **kwargs}))


@pytest.fixture(scope="module")
def crf_run(tmp_path_factory):
    run = CRFTagger(c1=0.0, c2=0.001, max_iterations=30).fit(OVERFIT).save(
        tmp_path_factory.mktemp("hub") / "crf-klue", metrics=METRICS)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "epoch-3.pt").write_bytes(b"training state")
    (run / ".DS_Store").write_bytes(b"junk")
    (run / "README.md").write_text("an old card", encoding="utf-8")
    return run


@pytest.fixture
def bert_like_run(tmp_path):
    """A directory shaped like a fine-tuned BERT run: kner.json plus the files plain transformers loads."""
    meta = {"family": "bert", "config": {"base_model": "klue/bert-base", "epochs": 3},
            "labels": ["PS", "LC", "OG", "DT", "TI", "QT"],
            "metrics": {**METRICS, "speed": {"sentences_per_second": 123.4, "latency_p95_ms": 18.5,
                                             "machine": "2-core CPU, no GPU"}},
            "history": [{"epoch": 1, "seconds": 600.0, "train_loss": 0.31, "dev_f1": 0.84},
                        {"epoch": 2, "seconds": 590.0, "train_loss": 0.12, "dev_f1": 0.87}],
            "train_seconds": 1190.0}
    (tmp_path / "kner.json").write_text(json.dumps(meta), encoding="utf-8")
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        (tmp_path / name).write_text("{}", encoding="utf-8")
    return tmp_path


def test_card_metadata_declares_task_language_data_licence_and_dev_scores(crf_run):
    data = ModelCard(model_card(crf_run, "me/kner-crf")).data
    assert (data.pipeline_tag, data.language, data.license, data.library_name) == (
        "token-classification", "ko", "cc-by-sa-4.0", "kner")
    assert data.datasets == ["klue"] and "ner" in data.tags and "crf" in data.tags
    scores = {r.metric_name: r.metric_value for r in data.eval_results}
    assert scores["entity micro F1"] == 0.8217 and scores["KLUE character macro F1"] == 0.8756
    assert {r.dataset_split for r in data.eval_results} == {"validation"}


def test_card_body_reports_metrics_per_type_and_klue_attribution(crf_run):
    text = ModelCard(model_card(crf_run, "me/kner-crf")).text
    assert "| **micro F1** | **82.17** |" in text and "| KLUE entity macro F1 | 81.70 |" in text
    assert "| PS (person) | 90.00 | 80.00 | 84.70 | 10 |" in text and "| QT (quantity) |" in text
    assert "CC BY-SA 4.0" in text and "Park et al., 2021" in text and "2105.09680" in text
    assert "21,003 sentences" in text and "5,000 sentences" in text
    assert 'kner.load(snapshot_download("me/kner-crf"))' in text
    assert "pipeline(" not in text  # a CRF cannot be loaded by transformers


def test_card_for_a_transformers_model_names_its_base_and_shows_a_pipeline_and_speed(bert_like_run):
    card = ModelCard(model_card(bert_like_run, "me/kner-bert"))
    assert card.data.base_model == "klue/bert-base" and card.data.library_name == "transformers"
    assert 'pipeline("token-classification", model="me/kner-bert"' in card.text
    assert "| dev sentences per second | 123.4 |" in card.text and "| one-sentence latency p95 (ms) | 18.50 |" in card.text
    assert "2-core CPU, no GPU" in card.text and "| 2 | 590 | 0.1200 | 87.00 |" in card.text


def test_card_for_a_bilstm_crf_reading_an_encoder_names_it_as_its_base(tmp_path):
    meta = {"family": "bilstm-crf", "config": {"encoder": "intfloat/multilingual-e5-small", "encoder_layers": 3}}
    (tmp_path / "kner.json").write_text(json.dumps(meta), encoding="utf-8")
    card = ModelCard(model_card(tmp_path, "me/kner-bilstm"))
    assert card.data.base_model == "intfloat/multilingual-e5-small" and card.data.library_name == "kner"
    assert "Reads the frozen hidden states of `intfloat/multilingual-e5-small`." in card.text
    assert "Fine-tuned from" not in card.text
    assert "contain or derive from `intfloat/multilingual-e5-small`, whose own licence terms apply" in card.text


def test_a_card_for_a_model_carrying_gemma_passes_on_the_gemma_terms(tmp_path):
    meta = {"family": "bilstm-crf", "config": {"encoder": "google/gemma-3-270m", "encoder_norm": True}}
    (tmp_path / "kner.json").write_text(json.dumps(meta), encoding="utf-8")
    assert "[Gemma Terms of Use](https://ai.google.dev/gemma/terms)" in model_card(tmp_path, "me/kner-bilstm-gemma")
    (tmp_path / "kner.json").write_text(json.dumps({"family": "crf", "config": {}}), encoding="utf-8")
    assert "whose own licence terms" not in model_card(tmp_path, "me/kner-crf")


def test_a_card_for_a_bilstm_crf_reading_two_encoders_names_both_and_passes_on_gemma_terms_from_either(tmp_path):
    meta = {"family": "bilstm-crf", "config": {"encoder": "intfloat/multilingual-e5-small",
                                               "encoder2": "google/gemma-3-270m"}}
    (tmp_path / "kner.json").write_text(json.dumps(meta), encoding="utf-8")
    card = ModelCard(model_card(tmp_path, "me/kner-bilstm-two"))
    assert "hidden states of `intfloat/multilingual-e5-small` and `google/gemma-3-270m`." in card.text
    assert "[Gemma Terms of Use](https://ai.google.dev/gemma/terms)" in card.text
    assert "derive from `intfloat/multilingual-e5-small`, whose own licence terms" in card.text


def test_a_card_without_metrics_says_so_instead_of_inventing_them(tmp_path):
    (tmp_path / "kner.json").write_text(json.dumps({"family": "crf", "config": {}}), encoding="utf-8")
    card = ModelCard(model_card(tmp_path, "me/untested"))
    assert "No dev metrics were recorded" in card.text and not card.data.eval_results


def test_push_creates_the_repo_and_uploads_model_files_and_card_in_one_commit(crf_run):
    before = {p: p.read_bytes() for p in crf_run.rglob("*") if p.is_file()}
    api = FakeApi()
    result = push(crf_run, "me/kner-crf", private=True, token="hf_secret", api=api)
    (kind1, repo1, create), (kind2, repo2, commit) = api.calls
    assert (kind1, repo1, kind2, repo2) == ("create_repo", "me/kner-crf", "create_commit", "me/kner-crf")
    assert create["private"] is True and create["exist_ok"] is True and create["token"] == "hf_secret"
    uploaded = {op.path_in_repo: op for op in commit["operations"]}
    # the lexicon table is part of the model; no checkpoints, hidden files or old card
    assert set(uploaded) == {"kner.json", "model.crfsuite", "lexicon.tsv.gz", "README.md"}
    assert uploaded["README.md"].path_or_fileobj.decode("utf-8") == result.card
    assert commit["token"] == "hf_secret" and "crf" in commit["commit_message"]
    assert result.url == "https://huggingface.co/me/kner-crf"
    assert {p: p.read_bytes() for p in crf_run.rglob("*") if p.is_file()} == before  # run dir untouched


def test_dry_run_sends_nothing(crf_run):
    api = FakeApi()
    result = push(crf_run, "me/kner-crf", dry_run=True, api=api)
    assert api.calls == [] and result.url is None and "model.crfsuite" in result.files


def test_a_refused_upload_becomes_a_clear_error(crf_run):
    with pytest.raises(PushError, match="token"):
        push(crf_run, "me/kner-crf", api=FakeApi(fail=True))


@pytest.mark.parametrize("repo", ["no-owner", "me/bad name", "a/b/c", "me/x--..y"])
def test_bad_repository_names_are_refused_before_any_upload(crf_run, repo):
    with pytest.raises(PushError, match="--repo"):
        plan(crf_run, repo)


def test_cli_dry_run_prints_the_card_and_the_file_list(crf_run, capsys):
    main(["push", str(crf_run), "--repo", "me/kner-crf", "--dry-run"])
    out = capsys.readouterr().out
    assert out.startswith("---\n") and "would upload to me/kner-crf: README.md" in out and "model.crfsuite" in out


def test_cli_push_of_a_folder_that_is_not_a_model_exits_with_a_message(tmp_path):
    with pytest.raises(SystemExit, match="kner push: .*kner.json"):
        main(["push", str(tmp_path), "--repo", "me/x", "--dry-run"])


@pytest.mark.slow
def test_a_real_bert_run_gets_the_transformers_card_and_its_pipeline_snippet_works(tmp_path, request):
    from builders import bert as bert_builder
    from transformers import pipeline

    from kner.onnx_backend import export_onnx

    run = bert_builder.make(tmp_path, request).fit(OVERFIT).save(tmp_path / "bert", metrics=METRICS)
    export_onnx(run)
    result = plan(run, "me/kner-bert")
    card = ModelCard(result.card)
    assert card.data.library_name == "transformers" and "onnx/model.onnx" in card.text
    assert "reads morphemes" not in card.text  # WordPiece: pretokenize auto reads raw text
    assert {"config.json", "model.safetensors", "tokenizer.json", "onnx/model.onnx"} <= set(result.files)
    # What the card's snippet does, on the local folder instead of the hub id.
    found = pipeline("token-classification", model=str(run), aggregation_strategy="simple", device="cpu")(OVERFIT[0].text)
    assert {g["entity_group"] for g in found} == {s.label for s in OVERFIT[0].spans}


def test_the_card_of_a_morpheme_reading_bert_run_warns_that_the_plain_pipeline_reads_raw_text(tmp_path, request):
    from builders import bert as bert_builder

    run = bert_builder.make(tmp_path, request, "sentencepiece", epochs=1).fit(OVERFIT[:2]).save(tmp_path / "bert")
    assert "reads morphemes" in model_card(run, "me/kner-bert")


def test_card_says_what_chose_the_epoch_and_which_recipe(bert_like_run):
    meta = json.loads((bert_like_run / "kner.json").read_text(encoding="utf-8"))
    meta["provenance"] = {"recipe": "klue-cpu", "selection": {
        "on": "validation", "note": "selected on 1,050 validation sentences held out of train; dev not used for selection"}}
    (bert_like_run / "kner.json").write_text(json.dumps(meta), encoding="utf-8")
    text = ModelCard(model_card(bert_like_run, "me/kner-bert")).text
    assert "scored on its dev split; selected on 1,050 validation sentences held out of train; dev not used" in text
    assert "kner's `klue-cpu` recipe" in text and "| epoch | seconds | train loss | validation F1 |" in text
