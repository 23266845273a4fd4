"""The text tower's BERT encoder, for inference.

Same parameter names and arithmetic as `transformers`' ``BertModel`` (post-norm layers,
absolute positions, token type 0, exact GELU, SDPA attention), so an alignment checkpoint's
text tower loads here unchanged.  Only what m3fm builds is covered; :func:`lean_bert` answers
None for any other saved config, and the caller then uses `transformers`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class SavedConfig:
    """A text tower's ``config.json`` as transformers wrote it: read by attribute, written
    back unchanged (what :meth:`MultiMedCLIP.save_config` asks of a text encoder)."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = dict(settings)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["settings"][name]
        except KeyError:
            raise AttributeError(name) from None

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(self.settings, indent=2) + "\n")


def lean_bert(settings: dict[str, Any]) -> LeanBert | None:
    """A LeanBert for a saved ``BertConfig`` (as a dict); None when it asks for anything this
    module does not compute (another model type, a decoder, another activation)."""
    plain = (
        settings.get("model_type") == "bert"
        and settings.get("hidden_act", "gelu") == "gelu"
        and not settings.get("is_decoder", False)
        and not settings.get("add_cross_attention", False)
        and settings.get("position_embedding_type", "absolute") == "absolute"
    )
    return LeanBert(SavedConfig(settings)) if plain else None


class _Layer(nn.Module):
    """One post-norm encoder layer, its modules at transformers' names."""

    def __init__(self, width: int, heads: int, ffn_dim: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.attention = nn.Module()
        self.attention.self = nn.Module()
        for name in ("query", "key", "value"):
            setattr(self.attention.self, name, nn.Linear(width, width))
        self.attention.output = _DenseNorm(width, width, eps)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(width, ffn_dim)
        self.output = _DenseNorm(ffn_dim, width, eps)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, length, width = hidden.shape
        project = self.attention.self

        def split(linear: nn.Linear) -> torch.Tensor:
            return linear(hidden).view(batch, length, self.heads, -1).transpose(1, 2)

        attended = F.scaled_dot_product_attention(
            split(project.query), split(project.key), split(project.value), attn_mask=mask)
        hidden = self.attention.output(attended.transpose(1, 2).reshape(batch, length, width),
                                       hidden)
        return self.output(F.gelu(self.intermediate.dense(hidden)), hidden)


class _DenseNorm(nn.Module):
    def __init__(self, width_in: int, width_out: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(width_in, width_out)
        self.LayerNorm = nn.LayerNorm(width_out, eps=eps)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(hidden) + residual)


class LeanBert(nn.Module):
    """``BertModel``'s parameters (pooler included, which m3fm does not use) and its last
    hidden states, as ``model(input_ids=…, attention_mask=…)[0]``."""

    def __init__(self, config: SavedConfig) -> None:
        super().__init__()
        self.config = config
        width, eps = config.hidden_size, config.layer_norm_eps
        self.embeddings = nn.Module()
        self.embeddings.word_embeddings = nn.Embedding(
            config.vocab_size, width, config.settings.get("pad_token_id"))
        self.embeddings.position_embeddings = nn.Embedding(config.max_position_embeddings, width)
        self.embeddings.token_type_embeddings = nn.Embedding(config.type_vocab_size, width)
        self.embeddings.LayerNorm = nn.LayerNorm(width, eps=eps)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(
            _Layer(width, config.num_attention_heads, config.intermediate_size, eps)
            for _ in range(config.num_hidden_layers))
        self.pooler = nn.Module()
        self.pooler.dense = nn.Linear(width, width)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
                ) -> tuple[torch.Tensor]:
        embeddings = self.embeddings
        length = input_ids.shape[1]
        hidden = (embeddings.word_embeddings(input_ids)
                  + embeddings.token_type_embeddings.weight[0]
                  + embeddings.position_embeddings.weight[:length])
        hidden = embeddings.LayerNorm(hidden)
        mask = attention_mask.bool()[:, None, None, :]  # keys that are not padding
        for layer in self.encoder.layer:
            hidden = layer(hidden, mask)
        return (hidden,)
