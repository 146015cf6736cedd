"""Which precision ``auto`` picks: bf16 on a CPU only where a family measured it faster at the same F1."""
import pytest
import torch

from kner.models import hf_common
from kner.models.bert import BertTagger
from kner.models.sllm import SLLMTagger


@pytest.mark.parametrize("has_bf16", [True, False])
def test_auto_precision_on_a_cpu_is_bf16_only_where_the_family_measured_it_and_the_cpu_has_it(monkeypatch, has_bf16):
    monkeypatch.setattr(hf_common, "cpu_has_bf16", lambda: has_bf16)
    cpu = torch.device("cpu")
    assert hf_common.pick_precision("auto", cpu, cpu_bf16=True) == ("bf16" if has_bf16 else "fp32")
    assert hf_common.pick_precision("auto", cpu) == "fp32"  # a family that did not measure a gain
    assert hf_common.pick_precision("fp32", cpu, cpu_bf16=True) == "fp32"  # asked for by name


@pytest.mark.parametrize("has_bf16", [True, False])
def test_bert_predicts_in_bf16_on_a_bf16_cpu_but_trains_in_fp32(monkeypatch, has_bf16):
    monkeypatch.setattr(hf_common, "cpu_has_bf16", lambda: has_bf16)
    tagger = BertTagger(device="cpu")
    assert (tagger.precision, tagger.train_precision) == ("bf16" if has_bf16 else "fp32", "fp32")
    asked = BertTagger(device="cpu", precision="bf16")  # a precision asked for by name sets both
    assert (asked.precision, asked.train_precision) == ("bf16", "bf16")


def test_the_sllm_stays_fp32_on_a_bf16_cpu_unless_asked(monkeypatch):
    monkeypatch.setattr(hf_common, "cpu_has_bf16", lambda: True)
    assert SLLMTagger(device="cpu").precision == "fp32"  # bf16 moved its F1 by more than 0.002
    assert SLLMTagger(device="cpu", precision="bf16").precision == "bf16"
