"""Characters to token ids through a model's vocabulary, and validated token ids.

Every token a stream or pool takes goes through a Tokenizer: text is mapped character
by character (a character outside the vocabulary becomes the unknown id, or an
UnknownCharError in strict mode), ids are checked to lie in [0, V) before anything is
allocated or run.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from rnn_runtime.errors import StreamError, UnknownCharError
from rnn_runtime.text import IDENTITY, describe, prepare


class Tokenizer:
    """A model's character vocabulary.

    Attributes:
        char_ids: {character: token id} of every token but the unknown one (read-only
            by convention: the per-step fast paths of streams read it).
        unk_id: the id an unknown character maps to; None: the model has none, and such
            a character is always an UnknownCharError.
        vocab_size: V; valid ids are [0, V).
    """

    step_shape = ()  # one step's input is one id
    dtype = np.dtype(np.int64)

    def __init__(self, vocab: tuple[str, ...], unk_id: int | None, text: tuple = IDENTITY):
        self.vocab = vocab
        self.char_ids = {c: i for i, c in enumerate(vocab) if i != unk_id}
        self.unk_id = unk_id
        self.vocab_size = len(vocab)
        self.text = tuple(text)  # the text contract (rnn_runtime.text)
        self.prepares = self.text != IDENTITY

    def one(self, token, *, strict: bool = False) -> int:
        """One step's input (the reader interface rnn_runtime.frames shares): token_id."""
        return self.token_id(token, strict=strict)

    def sequence(self, tokens, *, strict: bool = False) -> np.ndarray:
        """A run of steps (the reader interface): token_ids."""
        return self.token_ids(tokens, strict=strict)

    def probe(self, n: int) -> np.ndarray:
        """The first n token ids, for the open-time cross-check."""
        return np.arange(min(n, self.vocab_size), dtype=np.int64)

    def shown(self, token) -> str:
        """A token id as an error message shows it."""
        return f"token id {int(token)} ({self.vocab[int(token)]!r})"

    def count_unknown(self, text: str) -> int:
        """How many characters of `text` are outside the vocabulary (after the text
        contract)."""
        ids = self.char_ids
        if self.prepares:
            text = prepare(text, *self.text)
        return sum(c not in ids for c in text)

    def encode(self, text: str, *, strict: bool = False) -> np.ndarray:
        """Map characters to token ids.

        Args:
            text: any string.
            strict: raise UnknownCharError for a character the model never saw,
                instead of mapping it to the unknown id.

        Returns:
            int64 (T,) token ids.
        """
        if not isinstance(text, str):
            raise StreamError(f"text must be a str; got {type(text).__name__}")
        if self.prepares:
            text = prepare(text, *self.text)
        unk = -1 if self.unk_id is None else self.unk_id
        ids = [self.char_ids.get(c, unk) for c in text]
        if (strict or unk < 0) and unk in ids:
            pos = ids.index(unk)
            why = "strict mode refuses it" if unk >= 0 else "this model has no unknown token"
            raise UnknownCharError(
                f"character {text[pos]!r} at position {pos} is not in the model's vocabulary "
                f"({len(self.char_ids)} characters); {why}"
            )
        return np.array(ids, dtype=np.int64)

    def token_ids(self, tokens, *, strict: bool = False) -> np.ndarray:
        """Validated int64 (T,) token ids from text, from an iterable of int ids in [0, V),
        or from a 1-D integer array of them."""
        if isinstance(tokens, str):
            return self.encode(tokens, strict=strict)
        V = self.vocab_size
        if isinstance(tokens, np.ndarray):
            arr = tokens
            if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
                raise StreamError(
                    f"token ids must be a 1-D integer array; got dtype {arr.dtype}, "
                    f"shape {arr.shape}"
                )
            bad = (arr < 0) | (arr >= V)
            if bad.any():
                self._out_of_range(int(arr[int(np.argmax(bad))]), int(np.argmax(bad)))
            return arr.astype(np.int64, copy=False)
        if not isinstance(tokens, Iterable) or isinstance(tokens, (bytes, bytearray, dict)):
            raise StreamError(
                "tokens must be a str, an iterable of int ids or a 1-D integer array; "
                f"got {type(tokens).__name__}"
            )
        tokens = list(tokens)
        for pos, t in enumerate(tokens):
            if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
                raise StreamError(f"token ids must be integers; got {tokens[:8]!r}")
            if not 0 <= t < V:
                self._out_of_range(int(t), pos)
        return np.array(tokens, dtype=np.int64)

    def _out_of_range(self, token: int, pos: int):
        raise StreamError(
            f"token id {_shown(token)} at position {pos} is out of range; "
            f"this model expects ids in [0, {self.vocab_size})"
        )

    def token_id(self, token, *, strict: bool = False) -> int:
        """One validated token id from a single character or an int id."""
        if isinstance(token, str):
            if len(token) != 1:
                raise StreamError(f"a step takes one character; got {token!r:.40}")
            ids = self.encode(token, strict=strict)
            if ids.size != 1:
                raise StreamError(
                    f"character {token!r} is {ids.size} characters under the model's text "
                    f"contract ({describe(self.text)}); feed it with feed()"
                )
            return int(ids[0])
        if isinstance(token, bool) or not isinstance(token, (int, np.integer)):
            raise StreamError(f"a step takes a character or an int id; got {token!r:.40}")
        V = self.vocab_size
        if not 0 <= token < V:
            raise StreamError(
                f"token id {_shown(int(token))} is out of range; this model expects [0, {V})"
            )
        return int(token)


def _shown(token: int) -> str:
    """An id as a message shows it: a huge one by its size (str() refuses 4,300+ digits)."""
    if abs(token) < 10**20:
        return str(token)
    power = f"2**{token.bit_length() - 1}"
    return f">= {power}" if token > 0 else f"<= -{power}"
