"""The report generator's BART, for inference: greedy decoding with a key/value cache.

Same parameter names and arithmetic as `transformers`' ``BartForConditionalGeneration``
(post-norm layers, learnt positions offset by 2, scaled and tied token embeddings, SDPA
attention), so a generator saved in training loads here unchanged and decodes the same
tokens.  Greedy decoding with the repetition controls m3fm uses (repetition penalty, n-gram
blocking, extra processors such as the clause blocker) is written out below; beam search
stays with `transformers` (see :meth:`m3fm.generation.model.MultiMedLM.generate`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

ScoreProcessor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""Called as ``processor(ids_so_far, scores)`` at each step; returns the changed scores."""

POSITION_OFFSET = 2
"""BART's learnt positions start at index 2 (a fairseq legacy kept by transformers)."""


@dataclass(frozen=True)
class BartShape:
    """The sizes of a BART: what ``BartConfig`` says about the arithmetic."""

    vocab_size: int
    d_model: int
    encoder_layers: int
    decoder_layers: int
    heads: int
    ffn_dim: int
    max_positions: int
    pad_token_id: int
    scale_embedding: bool = True


class _Attention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (
            nn.Linear(width, width) for _ in range(4))

    def split(self, states: torch.Tensor, projection: nn.Linear) -> torch.Tensor:
        """(B, T, W) -> (B, heads, T, W / heads)."""
        batch, length, _ = states.shape
        return projection(states).view(batch, length, self.heads, -1).transpose(1, 2)

    def attend(self, states: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
               ) -> torch.Tensor:
        """`states` attending to every one of `keys` (no mask: the encoder's positions, or a
        decoder step's own and earlier ones)."""
        query = self.split(states, self.q_proj)
        out = F.scaled_dot_product_attention(query, keys, values)
        return self.out_proj(out.transpose(1, 2).reshape(states.shape))


class _FeedForward(nn.Module):
    """Names as transformers' layers have them: fc1, fc2, final_layer_norm."""

    def __init__(self, width: int, ffn_dim: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, ffn_dim), nn.Linear(ffn_dim, width)
        self.final_layer_norm = nn.LayerNorm(width)

    def feed_forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.final_layer_norm(hidden + self.fc2(F.gelu(self.fc1(hidden))))


class _EncoderLayer(_FeedForward):
    def __init__(self, width: int, heads: int, ffn_dim: int) -> None:
        super().__init__(width, ffn_dim)
        self.self_attn = _Attention(width, heads)
        self.self_attn_layer_norm = nn.LayerNorm(width)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        attention = self.self_attn
        keys = attention.split(hidden, attention.k_proj)
        values = attention.split(hidden, attention.v_proj)
        hidden = self.self_attn_layer_norm(hidden + attention.attend(hidden, keys, values))
        return self.feed_forward(hidden)


class _DecoderLayer(_FeedForward):
    def __init__(self, width: int, heads: int, ffn_dim: int) -> None:
        super().__init__(width, ffn_dim)
        self.self_attn = _Attention(width, heads)
        self.self_attn_layer_norm = nn.LayerNorm(width)
        self.encoder_attn = _Attention(width, heads)
        self.encoder_attn_layer_norm = nn.LayerNorm(width)

    def forward(self, hidden: torch.Tensor, cache: _LayerCache) -> torch.Tensor:
        """One decoding step (`hidden`: B × 1 × W), appending its key and value to `cache`."""
        attention = self.self_attn
        keys, values = cache.append(attention.split(hidden, attention.k_proj),
                                    attention.split(hidden, attention.v_proj))
        hidden = self.self_attn_layer_norm(hidden + attention.attend(hidden, keys, values))
        hidden = self.encoder_attn_layer_norm(
            hidden + self.encoder_attn.attend(hidden, cache.encoder_keys, cache.encoder_values))
        return self.feed_forward(hidden)


class _LayerCache:
    """One decoder layer's keys and values: the encoder's (computed once) and those of the
    positions written so far, in buffers sized for the longest report."""

    def __init__(self, encoder_keys: torch.Tensor, encoder_values: torch.Tensor,
                 capacity: int) -> None:
        self.encoder_keys, self.encoder_values = encoder_keys, encoder_values
        self.keys = encoder_keys.new_empty(
            (*encoder_keys.shape[:2], capacity, encoder_keys.shape[3]))
        self.values = torch.empty_like(self.keys)
        self.length = 0

    def append(self, keys: torch.Tensor, values: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + keys.shape[2]
        self.keys[:, :, self.length:end] = keys
        self.values[:, :, self.length:end] = values
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]


class _Stack(nn.Module):
    def __init__(self, shape: BartShape, layers: list[nn.Module]) -> None:
        super().__init__()
        self.embed_positions = nn.Embedding(shape.max_positions + POSITION_OFFSET, shape.d_model)
        self.layernorm_embedding = nn.LayerNorm(shape.d_model)
        self.layers = nn.ModuleList(layers)

    def positions(self, start: int, length: int) -> torch.Tensor:
        return self.embed_positions.weight[start + POSITION_OFFSET:start + POSITION_OFFSET
                                           + length]


class _Encoder(_Stack):
    def forward(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """Encoder states (B, T, W) of input embeddings (B, T, W), all positions attended."""
        hidden = self.layernorm_embedding(
            inputs_embeds + self.positions(0, inputs_embeds.shape[1]))
        for layer in self.layers:
            hidden = layer(hidden)
        return hidden


class _Model(nn.Module):
    """``BartModel``'s tree: ``shared`` embeddings, ``encoder``, ``decoder``."""

    def __init__(self, shape: BartShape) -> None:
        super().__init__()
        self.shared = nn.Embedding(shape.vocab_size, shape.d_model, shape.pad_token_id)
        self.encoder = _Encoder(shape, [_EncoderLayer(shape.d_model, shape.heads, shape.ffn_dim)
                                      for _ in range(shape.encoder_layers)])
        self.decoder = _Stack(shape, [_DecoderLayer(shape.d_model, shape.heads, shape.ffn_dim)
                                      for _ in range(shape.decoder_layers)])
        # transformers ties both stacks' token embeddings to `shared`; so do the names here.
        self.encoder.embed_tokens = self.decoder.embed_tokens = self.shared


class LeanBart(nn.Module):
    """``BartForConditionalGeneration``'s parameters and greedy decoding, in plain torch."""

    def __init__(self, shape: BartShape) -> None:
        super().__init__()
        self.shape = shape
        self.model = _Model(shape)
        self.lm_head = nn.Linear(shape.d_model, shape.vocab_size, bias=False)
        self.lm_head.weight = self.model.shared.weight
        self.register_buffer("final_logits_bias", torch.zeros(1, shape.vocab_size))
        self.embed_scale = math.sqrt(shape.d_model) if shape.scale_embedding else 1.0

    def get_encoder(self) -> nn.Module:
        """The encoder, called as ``encoder(inputs_embeds=…)``, as transformers names it."""
        return self.model.encoder

    def decode_step(self, ids: torch.Tensor, position: int, caches: Sequence[_LayerCache]
                    ) -> torch.Tensor:
        """Next-token logits (B, vocab) after the tokens `ids` (B, 1) written at `position`."""
        decoder = self.model.decoder
        hidden = self.model.shared(ids) * self.embed_scale + decoder.positions(position, 1)
        hidden = decoder.layernorm_embedding(hidden)
        for layer, cache in zip(decoder.layers, caches, strict=True):
            hidden = layer(hidden, cache)
        return self.lm_head(hidden[:, -1]) + self.final_logits_bias

    @torch.no_grad()
    def greedy(
        self, inputs_embeds: torch.Tensor, *, start_id: int, eos_id: int, pad_id: int,
        max_new_tokens: int, repetition_penalty: float = 1.0, no_repeat_ngram_size: int = 0,
        processors: Sequence[ScoreProcessor] = (),
    ) -> torch.Tensor:
        """(B, 1 + up to max_new_tokens) ids: the start token, then the most likely token at
        each step, [PAD] after a row's [EOS]; stops when every row has written [EOS].

        The scores are changed as transformers' ``generate`` does, in its order: repetition
        penalty, n-gram blocking, then `processors`."""
        encoder_states = self.model.encoder(inputs_embeds)
        caches = []
        for layer in self.model.decoder.layers:
            attention = layer.encoder_attn
            caches.append(_LayerCache(attention.split(encoder_states, attention.k_proj),
                                      attention.split(encoder_states, attention.v_proj),
                                      capacity=max_new_tokens))
        batch = len(inputs_embeds)
        written = torch.full((batch, 1), start_id, dtype=torch.long, device=inputs_embeds.device)
        unfinished = torch.ones(batch, dtype=torch.bool, device=inputs_embeds.device)
        for step in range(max_new_tokens):
            scores = self.decode_step(written[:, -1:], step, caches).float()
            if repetition_penalty != 1.0:
                scores = penalise_repeats(written, scores, repetition_penalty)
            if no_repeat_ngram_size:
                scores = block_repeated_ngrams(written, scores, no_repeat_ngram_size)
            for processor in processors:
                scores = processor(written, scores)
            chosen = scores.argmax(dim=-1)
            chosen = torch.where(unfinished, chosen, torch.full_like(chosen, pad_id))
            written = torch.cat([written, chosen[:, None]], dim=1)
            unfinished &= chosen != eos_id
            if not unfinished.any():
                break
        return written


def penalise_repeats(written: torch.Tensor, scores: torch.Tensor, penalty: float
                     ) -> torch.Tensor:
    """The CTRL penalty on every token already written: positive scores divided by
    `penalty`, negative ones multiplied."""
    seen = torch.gather(scores, 1, written)
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    return scores.scatter(1, written, seen)


def block_repeated_ngrams(written: torch.Tensor, scores: torch.Tensor, size: int
                          ) -> torch.Tensor:
    """-inf for each token that would complete an n-gram of `size` tokens written before."""
    length = written.shape[1]
    if length + 1 < size:
        return scores
    for row, ids in enumerate(written.tolist()):
        prefix = tuple(ids[length - size + 1:])
        banned = [ids[start + size - 1] for start in range(length - size + 1)
                  if tuple(ids[start:start + size - 1]) == prefix]
        if banned:
            scores[row, banned] = -float("inf")
    return scores
