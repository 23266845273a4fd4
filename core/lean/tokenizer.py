"""A checkpoint's tokenizer, read with the `tokenizers` library alone, for inference.

`transformers`' fast tokenizer is a wrapper around the same `tokenizers` object; importing it
costs most of a second.  What running a model asks of a tokenizer (batch encoding with padding
and truncation, decoding, the special tokens' ids) is answered here by that object directly,
with the same results.  :func:`lean_tokenizer` answers None for a folder it cannot read this
way, and the caller then uses `transformers`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
FAST_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")
"""The `transformers` classes that are the `tokenizers` object and nothing more."""


def lean_tokenizer(folder: Path) -> LeanTokenizer | None:
    """The tokenizer saved in `folder`, if it is a plain `tokenizers` one; else None."""
    try:
        saved = {name: (folder / name).read_bytes() for name in (CONFIG_FILE, TOKENIZER_FILE)}
        settings = json.loads(saved[CONFIG_FILE])
        backend = Tokenizer.from_str(saved[TOKENIZER_FILE].decode("utf-8"))
    except Exception:  # `tokenizers` raises bare Exceptions; transformers then explains it
        return None
    if not isinstance(settings, dict) or settings.get("tokenizer_class") not in FAST_CLASSES:
        return None
    if settings.get("additional_special_tokens") or settings.get("extra_special_tokens"):
        return None  # transformers counts them among the special ids; kept simple here
    special = {key: value for key, value in settings.items()
               if key.endswith("_token") and isinstance(value, str)}
    if any(backend.token_to_id(token) is None for token in special.values()):
        return None
    return LeanTokenizer(backend, special, saved)


class LeanTokenizer:
    """The part of a `transformers` fast tokenizer that inference uses.

    `saved`: the files it was read from, written back unchanged by :meth:`save_pretrained`.
    """

    def __init__(self, backend: Tokenizer, special_tokens: dict[str, str],
                 saved: dict[str, bytes]) -> None:
        self.backend = backend
        self.special_tokens = special_tokens
        self.saved = saved
        for role, token in special_tokens.items():
            setattr(self, f"{role}_id", backend.token_to_id(token))
        self.all_special_ids = sorted({backend.token_to_id(token)
                                       for token in special_tokens.values()})

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, content in self.saved.items():
            (folder / name).write_bytes(content)

    def __len__(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def __call__(self, texts: list[str], *, padding: bool, truncation: bool, max_length: int,
                 return_tensors: str = "pt") -> dict[str, torch.Tensor]:
        """``input_ids`` and ``attention_mask`` (B, longest) of `texts`, special tokens added,
        each cut to `max_length` tokens; as ``tokenizer(texts, ...)`` returns them."""
        if not (padding and truncation and return_tensors == "pt"):
            raise ValueError("the lean tokenizer pads, truncates and returns tensors only")
        backend = self.backend
        backend.enable_truncation(max_length)
        backend.enable_padding(pad_id=self.pad_token_id, pad_token=self.special_tokens["pad_token"])
        encoded = backend.encode_batch(texts)
        return {"input_ids": torch.tensor([row.ids for row in encoded]),
                "attention_mask": torch.tensor([row.attention_mask for row in encoded])}

    def tokenize(self, text: str) -> list[str]:
        """The tokens of `text`, without special tokens."""
        return self.backend.encode(text, add_special_tokens=False).tokens

    def decode(self, ids: list[int], *, skip_special_tokens: bool = False,
               clean_up_tokenization_spaces: bool = False) -> str:
        """The text of `ids`; `transformers` cleans up no spaces here either (m3fm never asks)."""
        if clean_up_tokenization_spaces:
            raise ValueError("the lean tokenizer does not clean up tokenization spaces")
        return self.backend.decode(ids, skip_special_tokens=skip_special_tokens)
