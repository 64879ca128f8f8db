"""StreamModel.predict: padded batches of whole texts against PyTorch and a stream."""

from __future__ import annotations

import numpy as np
import pytest
from reference import LABELS, TEXT, close, ids, torch_run

from rnn_runtime import StreamError, UnknownCharError
from rnn_runtime.stream import MAX_CHUNK

TEXTS = ["abc", "j", "", TEXT, "hgfedcbaaaabbbjj", "q"]


def test_predict_matches_pytorch_and_a_stream(exported, rt_model):
    model, _ = exported
    predictions = rt_model.predict(TEXTS, batch_size=2)  # several batches, mixed lengths
    assert predictions[2] is None  # the empty text has no prediction
    for text, prediction in zip(TEXTS, predictions, strict=True):
        if not text:
            continue
        lp = torch_run(model, ids(text))[0]
        close(prediction.log_probs, lp)
        assert prediction.label == LABELS[int(np.argmax(lp))]
        streamed = rt_model.stream().feed(text)
        close(prediction.log_probs, streamed.log_probs)
        assert prediction.label == streamed.label


def test_predict_does_not_depend_on_batch_size(rt_model):
    one = rt_model.predict(TEXTS, batch_size=1)
    many = rt_model.predict(TEXTS)
    for a, b in zip(one, many, strict=True):
        if a is None:
            assert b is None
            continue
        close(a.log_probs, b.log_probs)
        assert a.label == b.label


def test_predict_runs_texts_longer_than_a_chunk(exported, rt_model):
    model, _ = exported
    long = ("abcdefghij" * (MAX_CHUNK // 10 + 50))[: MAX_CHUNK + 321]
    texts = [long, "ab", long[: MAX_CHUNK // 2]]
    predictions = rt_model.predict(texts)
    for text, prediction in zip(texts, predictions, strict=True):
        close(prediction.log_probs, torch_run(model, ids(text))[0])


@pytest.mark.parametrize(
    "texts, kwargs, error, match",
    [
        ("abc", {}, StreamError, "a sequence of strings; got one str"),
        (["ab", 3], {}, StreamError, r"texts\[1\]: text must be a str; got int"),
        (["ab", "aqb"], {"strict": True}, UnknownCharError, r"texts\[1\]: character 'q' at "),
        (["ab"], {"batch_size": 0}, StreamError, "batch_size must be an integer >= 1; got 0"),
    ],
)
def test_predict_refuses_bad_input(rt_model, texts, kwargs, error, match):
    with pytest.raises(error, match=match):
        rt_model.predict(texts, **kwargs)
