"""The text contract: text prepared before its characters are looked up, the same in
training (Vocabulary.encode), in the file and in the runtime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rnn_runtime
from rnn_export.config import ModelConfig
from rnn_export.data import DataError, Vocabulary
from rnn_export.export import build_onnx
from rnn_export.models import build_model
from rnn_runtime.errors import MetadataError, StreamError
from rnn_runtime.text import prepare

TOKENS = ("_", *"abcdeilmo")


@pytest.mark.parametrize(
    "text, unicode, lowercase, want",
    [
        ("Émile", "strip_marks", False, "Emile"),
        ("Émile", "strip_marks", True, "emile"),
        ("Émile", "keep", True, "émile"),
        ("Ślusàrski", "strip_marks", False, "Slusarski"),
        ("Ko\u0301", "strip_marks", False, "Ko"),  # a combining accent alone goes
        ("Ǆ", "keep", True, "ǆ"),
        ("abc", "keep", False, "abc"),
    ],
)
def test_prepare(text, unicode, lowercase, want):
    assert prepare(text, unicode, lowercase) == want


@pytest.fixture(scope="module")
def contract_model(tmp_path_factory):
    torch.manual_seed(0)
    vocab = Vocabulary(TOKENS, unk_id=0, unicode="strip_marks", lowercase=True)
    config = ModelConfig("stacked", len(TOKENS), ("x", "y"), hidden_size=8, input_kind="onehot")
    model = build_model(config).eval()
    path = tmp_path_factory.mktemp("text") / "m.onnx"
    path.write_bytes(build_onnx(model, vocab, "c" * 64).data)
    return vocab, path


def test_the_runtime_applies_the_files_contract_as_training_does(contract_model):
    vocab, path = contract_model
    rt = rnn_runtime.open_model(path)
    assert rt.metadata.text == ("strip_marks", True)
    assert vocab.encode("ÉMILE") == vocab.encode("emile") == list(rt.encode("Émile"))
    a, b = rt.stream(), rt.stream()
    for ch in "ÉMILE":
        got = a.step(ch)
    want = b.feed("emile")
    np.testing.assert_array_equal(got.log_probs, want.log_probs)
    assert rt.tokenizer.count_unknown("Ézß") == 2  # z, ß: outside; É is e
    with pytest.raises(StreamError, match=r"is 0 characters under the model's text contract"):
        a.step("\u0301")
    np.testing.assert_array_equal(a.prediction.log_probs, got.log_probs)  # unchanged


def test_a_vocabulary_without_a_contract_keeps_its_dict():
    assert Vocabulary(TOKENS).to_dict() == {"tokens": list(TOKENS), "unk_id": 0}
    with_one = Vocabulary(TOKENS, unicode="strip_marks")
    assert Vocabulary.from_dict(with_one.to_dict()) == with_one
    with pytest.raises(DataError, match="unicode form is one of"):
        Vocabulary(TOKENS, unicode="nfkc")


def test_a_bad_contract_in_a_file_is_refused(contract_model, tmp_path):
    import onnx

    _, path = contract_model
    proto = onnx.load(path)
    for prop in proto.metadata_props:
        if prop.key == "rnn_export.text":
            prop.value = '{"unicode": "nfkc", "lowercase": true}'
    onnx.save(proto, tmp_path / "bad.onnx")
    with pytest.raises(MetadataError, match=r"expected text to be \{\"unicode\": one of"):
        rnn_runtime.open_model(tmp_path / "bad.onnx")


def test_a_line_ends_at_newline_or_crlf_only_in_stream_as_in_score():
    from rnn_runtime.stream import line_text

    assert line_text("ab\r\r\n") == "ab\r"  # score and predict read "ab\r" too
    assert line_text("ab\r\n") == line_text("ab\n") == line_text("ab") == "ab"
    assert line_text("a\fb\u2028c\n") == "a\fb\u2028c"  # not a line end
