"""The text contract: how a model's text is prepared before its characters become ids.

A model trained on text that was normalized (the PyTorch tutorial's names pass through
unicodeToAscii: accents taken off, "Émile" read as "Emile") must be fed text prepared
the same way, or a device that skips the step maps "É" to the unknown id where the
model saw "E". The file carries the contract (metadata key rnn_export.text) and every
runtime applies it before the vocabulary, identically:

    unicode    "keep" (as given) or "strip_marks": Unicode NFD, then every combining
               mark (category Mn) removed: accents off, base letters kept
    lowercase  false, or true: str.lower() after the above

Characters outside the vocabulary after that map to its unknown id (the vocabulary says
which symbol that is), or are refused when it has none. Standard library only.
"""

from __future__ import annotations

import unicodedata

UNICODE_FORMS = ("keep", "strip_marks")
IDENTITY = ("keep", False)  # (unicode, lowercase): text goes in as given


def prepare(text: str, unicode: str = "keep", lowercase: bool = False) -> str:
    """text under the contract (unicode, lowercase)."""
    if unicode == "strip_marks":
        text = "".join(
            c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn"
        )
    return text.lower() if lowercase else text


def describe(contract: tuple[str, bool]) -> str:
    """One line for people: "accents stripped (NFD), lower-cased"."""
    unicode, lowercase = contract
    parts = []
    if unicode == "strip_marks":
        parts.append("accents stripped (NFD, combining marks removed)")
    if lowercase:
        parts.append("lower-cased")
    return ", ".join(parts) or "as given"
