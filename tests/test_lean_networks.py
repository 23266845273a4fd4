"""The plain-torch networks of m3fm.lean against their transformers originals: the same
weights load, the same hidden states come out, the same tokens are decoded; and a report model
loaded lean writes what the transformers one writes."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import REPO
from transformers import AutoModel, BertConfig

from m3fm.alignment.model import MultiMedCLIP
from m3fm.generation.config import DecodeConfig, GeneratorConfig
from m3fm.generation.model import MultiMedLM
from m3fm.generation.reporting import ReportModel
from m3fm.lean.bart import LeanBart
from m3fm.lean.bert import LeanBert, lean_bert
from m3fm.lean.tokenizer import LeanTokenizer, lean_tokenizer
from m3fm.models import default_model_dir
from m3fm.tokenizer import decode_report, train_tokenizer

REPORTS = [
    "The texture of both lungs was enhanced, and ground glass opacity was seen.",
    "双肺纹理增强，右肺下叶见斑片影，边缘不清。",
    "No pleural effusion; heart size 12.5cm. COVID-19 pneumonia?",
    "两肺未见异常。",
]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(REPORTS * 3, vocab_size=400)


@pytest.fixture(scope="module")
def saved_tokenizer(tokenizer, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    tokenizer.save_pretrained(folder)
    return lean_tokenizer(folder)


def _randomise(module: torch.nn.Module) -> None:
    """Weights far from their initial values (LayerNorms included), so a mismatch shows."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)


def test_the_lean_tokenizer_encodes_and_decodes_as_transformers(tokenizer, saved_tokenizer):
    assert isinstance(saved_tokenizer, LeanTokenizer)
    texts = [*REPORTS, "", "Metallic 金属伪影 " * 40]
    for max_length in (8, 192):
        ours = saved_tokenizer(texts, padding=True, truncation=True, max_length=max_length)
        theirs = tokenizer(texts, padding=True, truncation=True, max_length=max_length,
                           return_tensors="pt")
        assert torch.equal(ours["input_ids"], theirs["input_ids"])
        assert torch.equal(ours["attention_mask"], theirs["attention_mask"])
    ids = tokenizer(REPORTS[1], add_special_tokens=True)["input_ids"]
    assert decode_report(saved_tokenizer, ids) == decode_report(tokenizer, ids) == REPORTS[1]
    assert saved_tokenizer.all_special_ids == sorted(tokenizer.all_special_ids)
    assert len(saved_tokenizer) == len(tokenizer)
    assert saved_tokenizer.tokenize(REPORTS[2]) == tokenizer.tokenize(REPORTS[2])
    assert (saved_tokenizer.pad_token_id, saved_tokenizer.eos_token_id) == (
        tokenizer.pad_token_id, tokenizer.eos_token_id)


def test_a_folder_the_lean_tokenizer_cannot_read_is_left_to_transformers(tmp_path):
    assert lean_tokenizer(tmp_path) is None  # no files at all
    (tmp_path / "tokenizer.json").write_text("{not json")
    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "BertTokenizer"}')
    assert lean_tokenizer(tmp_path) is None


def test_a_tokenizer_with_extra_special_tokens_is_left_to_transformers(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    config = tmp_path / "tokenizer_config.json"
    settings = json.loads(config.read_text())
    config.write_text(json.dumps({**settings, "extra_special_tokens": ["[FINDING]"]}))
    assert lean_tokenizer(tmp_path) is None


def test_the_lean_bert_gives_transformers_hidden_states(tokenizer, saved_tokenizer):
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
                        pad_token_id=tokenizer.pad_token_id)
    theirs = AutoModel.from_config(config).eval()
    _randomise(theirs)
    ours = lean_bert(config.to_dict())
    assert isinstance(ours, LeanBert)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    tokens = saved_tokenizer(REPORTS, padding=True, truncation=True, max_length=64)
    with torch.no_grad():
        expected = theirs(**tokens)[0]
        got = ours(**tokens)[0]
    valid = tokens["attention_mask"].bool()  # padding positions are never read
    torch.testing.assert_close(got[valid], expected[valid], rtol=1e-4, atol=1e-5)
    assert ours.config.hidden_size == 32


@pytest.mark.parametrize("settings", [{"model_type": "roberta"}, {"model_type": "bert",
                                      "is_decoder": True}, {"model_type": "bert",
                                                            "hidden_act": "relu"}])
def test_a_text_tower_the_lean_bert_does_not_compute_is_left_to_transformers(settings):
    assert lean_bert(settings) is None


@pytest.fixture(scope="module")
def generators(tokenizer):
    """A random transformers generator and a lean one holding the same weights."""
    config = GeneratorConfig(languages=("en", "zh"), modalities=("ct",), hidden_size=32,
                             prefix_tokens=2, encoder_layers=2, decoder_layers=2, num_heads=4,
                             intermediate_size=64, dropout=0.0, max_length=48)
    torch.manual_seed(0)
    theirs = MultiMedLM(config, embed_dim=8, tokenizer=tokenizer).eval()
    _randomise(theirs)
    ours = MultiMedLM(config, embed_dim=8, tokenizer=tokenizer, lean=True).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    assert isinstance(ours.bart, LeanBart)
    return theirs, ours


@pytest.mark.parametrize("decode", [
    DecodeConfig(max_new_tokens=40),
    DecodeConfig(max_new_tokens=40, repetition_penalty=1.5),
    DecodeConfig(max_new_tokens=40, no_repeat_ngram_size=2),
    DecodeConfig(max_new_tokens=40, repeated_clauses="block", repetition_penalty=1.2),
], ids=["greedy", "penalty", "ngrams", "clauses"])
def test_lean_greedy_decoding_writes_the_tokens_transformers_writes(generators, decode):
    theirs, ours = generators
    embeddings = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    expected = theirs.generate(embeddings, "zh", decode, modality="ct")
    assert ours.generate(embeddings, "zh", decode, modality="ct") == expected
    assert any(len(row) >= 10 for row in expected)  # long enough to exercise the cache


def test_beam_search_lends_a_lean_generators_weights_to_transformers(generators):
    theirs, ours = generators
    embeddings = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    decode = DecodeConfig(max_new_tokens=20, num_beams=3)
    assert ours.generate(embeddings, "en", decode) == theirs.generate(embeddings, "en", decode)
    assert isinstance(ours.bart, LeanBart)  # greedy decoding stays lean


def test_the_bundled_model_loaded_lean_writes_the_same_reports_and_probabilities():
    """Same checkpoint, both ways: identical reports for both sample pictures, modalities and
    languages, embeddings and label-prompt embeddings equal to float rounding."""
    lean = ReportModel.from_pretrained(default_model_dir())
    full = ReportModel.from_pretrained(default_model_dir(), lean=False)
    assert isinstance(lean.generator.bart, LeanBart)
    assert isinstance(lean.model.text_encoder, LeanBert)
    assert isinstance(lean.model.tokenizer, LeanTokenizer)
    assert not isinstance(full.generator.bart, LeanBart)
    samples = REPO / "plugins" / "samples"
    for modality in ("ct", "cxr"):
        images = [samples / "ct.png", samples / "cxr.png"]
        ours, theirs = (model.embed_images(images, modality=modality) for model in (lean, full))
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
        for lang in ("en", "zh"):
            assert (lean.reports_from_embeddings(ours, lang, modality=modality)
                    == full.reports_from_embeddings(ours, lang, modality=modality))
    prompts = ["novel coronavirus pneumonia", "双肺未见异常"]
    torch.testing.assert_close(lean.embed_texts(prompts, "en"), full.embed_texts(prompts, "en"),
                               rtol=1e-4, atol=1e-5)


def test_an_alignment_model_loaded_lean_can_be_saved_and_reloaded(tmp_path):
    """The text tower's saved config goes back as it came, so a lean model saves whole."""
    align = MultiMedCLIP.from_pretrained(default_model_dir() / "align", lean=True)
    align.save_pretrained(tmp_path)
    again = MultiMedCLIP.from_pretrained(tmp_path, lean=False)
    texts = align.tokenize(REPORTS)
    with torch.no_grad():
        torch.testing.assert_close(align.encode_text(**texts), again.encode_text(**texts),
                                   rtol=1e-4, atol=1e-5)
