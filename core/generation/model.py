"""MultiMedLM: a report generator that decodes one point of the shared space into a report.

The point (a text embedding in training, a bridged image embedding at inference) is projected
to a few encoder positions, preceded by a learnt token for the target language (and, in a
generator conditioned on modality, one for the imaging modality); a BART
encoder-decoder from `transformers` does the rest, so decoding gets its key/value cache,
beam search, length penalty and n-gram blocking from ``generate`` instead of from code here.
A generator loaded for inference (``lean``) holds the plain-torch BART of
:mod:`m3fm.lean.bart` instead, which decodes greedily without importing `transformers`
(seconds of start-up) and hands beam search over to it.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import torch
from torch import nn

from m3fm.generation.config import DecodeConfig, GeneratorConfig
from m3fm.generation.repetition import ClauseTokens, RepeatedClauseBlocker, clause_boundary_ids
from m3fm.lean.bart import BartShape, LeanBart
from m3fm.registry import UsageError

if TYPE_CHECKING:
    from transformers import BartConfig, PreTrainedTokenizerFast

    from m3fm.lean.tokenizer import LeanTokenizer

IGNORE_INDEX = -100
"""Label value the cross-entropy skips (padding)."""


class MultiMedLM(nn.Module):
    """Writes reports in any of its languages from embeddings of dimension `embed_dim`."""

    def __init__(
        self, config: GeneratorConfig, embed_dim: int,
        tokenizer: PreTrainedTokenizerFast | LeanTokenizer, *, lean: bool = False,
    ) -> None:
        """`lean`: hold the plain-torch BART, to run weights loaded from a checkpoint."""
        super().__init__()
        self.config, self.embed_dim, self.tokenizer = config, embed_dim, tokenizer
        width = config.hidden_size
        self.prefix = nn.Linear(embed_dim, config.prefix_tokens * width)
        self.language_tokens = nn.Embedding(len(config.languages), width)
        if config.modalities:  # no parameter at all otherwise: older checkpoints load as saved
            self.modality_tokens = nn.Embedding(len(config.modalities) + 1, width)
        self.bart = LeanBart(self._shape()) if lean else _transformers_bart(self._bart_config())

    def _shape(self) -> BartShape:
        config = self.config
        return BartShape(
            vocab_size=len(self.tokenizer), d_model=config.hidden_size,
            encoder_layers=config.encoder_layers, decoder_layers=config.decoder_layers,
            heads=config.num_heads, ffn_dim=config.intermediate_size,
            max_positions=max(config.max_length,
                              config.prefix_tokens + config.conditioning_tokens) + 2,
            pad_token_id=self.tokenizer.pad_token_id,
        )

    def _bart_config(self) -> BartConfig:
        from transformers import BartConfig

        config, shape, tokenizer = self.config, self._shape(), self.tokenizer
        return BartConfig(
            vocab_size=shape.vocab_size,
            d_model=shape.d_model,
            encoder_layers=shape.encoder_layers,
            decoder_layers=shape.decoder_layers,
            encoder_attention_heads=shape.heads,
            decoder_attention_heads=shape.heads,
            encoder_ffn_dim=shape.ffn_dim,
            decoder_ffn_dim=shape.ffn_dim,
            dropout=config.dropout,
            attention_dropout=config.dropout,
            max_position_embeddings=shape.max_positions,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.bos_token_id,
            forced_bos_token_id=None,
            forced_eos_token_id=None,
            scale_embedding=shape.scale_embedding,
        )

    def language_id(self, language: str) -> int:
        """Index of `language` among the generator's languages; UsageError lists them."""
        if language not in self.config.languages:
            raise UsageError(
                f"this model has no report generator for {language!r}; it writes "
                f"{', '.join(self.config.languages)}"
            )
        return self.config.languages.index(language)

    def modality_id(self, modality: str | None) -> int:
        """Index of `modality` among the generator's modalities; None (not known) is the
        extra `unknown` index.  A generator without modality tokens answers 0 for any
        modality (it is not used); one with them refuses a modality it does not know."""
        modalities = self.config.modalities
        if not modalities or modality is None:
            return len(modalities)
        if modality not in modalities:
            raise UsageError(
                f"this model's report generator knows no modality {modality!r}; it knows "
                f"{', '.join(modalities)}"
            )
        return modalities.index(modality)

    def encoder_inputs(
        self, embeddings: torch.Tensor, language_ids: torch.Tensor,
        modality_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, conditioning_tokens + prefix_tokens, hidden): the language token, the modality
        token when the generator has them (`modality_ids` None: `unknown`), then the
        projected embedding."""
        prefix = self.prefix(embeddings).view(len(embeddings), self.config.prefix_tokens, -1)
        tokens = [self.language_tokens(language_ids).unsqueeze(1)]
        if self.config.modalities:
            if modality_ids is None:
                modality_ids = torch.full_like(language_ids, len(self.config.modalities))
            tokens.append(self.modality_tokens(modality_ids).unsqueeze(1))
        return torch.cat([*tokens, prefix], dim=1)

    def tokenize_targets(self, reports: list[str]) -> torch.Tensor:
        """Labels of normalised reports: their tokens then [EOS], padded with IGNORE_INDEX."""
        ids = self.tokenizer(
            reports, add_special_tokens=False, truncation=True,
            max_length=self.config.max_length - 1,
        )["input_ids"]
        eos = self.tokenizer.eos_token_id
        longest = max(len(row) for row in ids) + 1
        labels = torch.full((len(ids), longest), IGNORE_INDEX, dtype=torch.long)
        for row, tokens in enumerate(ids):
            labels[row, :len(tokens) + 1] = torch.tensor([*tokens, eos])
        return labels

    def forward(
        self, embeddings: torch.Tensor, language_ids: torch.Tensor, labels: torch.Tensor,
        modality_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean token cross-entropy of writing `labels` from `embeddings` (teacher forcing)."""
        inputs = self.encoder_inputs(embeddings, language_ids, modality_ids)
        return self.bart(inputs_embeds=inputs, labels=labels).loss

    @functools.cached_property
    def clause_boundaries(self) -> ClauseTokens:
        """Token ids that end a clause or sentence (see :func:`clause_boundary_ids`)."""
        return clause_boundary_ids(self.tokenizer)

    def token_limit(self, decode: DecodeConfig) -> int:
        """The longest report decoded: `decode.max_new_tokens`, but no more positions than
        the decoder was built with (``max_length``)."""
        return min(decode.max_new_tokens, self.config.max_length)

    @torch.no_grad()
    def generate(
        self, embeddings: torch.Tensor, language: str, decode: DecodeConfig,
        use_cache: bool = True, modality: str | None = None,
    ) -> list[list[int]]:
        """Token ids of one report per embedding (without [BOS]/[EOS]/padding).

        `modality` picks the modality token of a generator conditioned on modality (None:
        its `unknown` token); a generator without modality tokens ignores it.
        """
        language_ids = torch.full(
            (len(embeddings),), self.language_id(language), device=embeddings.device
        )
        modality_ids = torch.full_like(language_ids, self.modality_id(modality))
        inputs = self.encoder_inputs(embeddings, language_ids, modality_ids)
        tokenizer = self.tokenizer
        blockers = ([RepeatedClauseBlocker(self.clause_boundaries)]
                    if decode.repeated_clauses == "block" else [])
        if isinstance(self.bart, LeanBart) and decode.num_beams == 1 and use_cache:
            output = self.bart.greedy(
                inputs, start_id=tokenizer.bos_token_id, eos_id=tokenizer.eos_token_id,
                pad_id=tokenizer.pad_token_id, max_new_tokens=self.token_limit(decode),
                repetition_penalty=decode.repetition_penalty,
                no_repeat_ngram_size=decode.no_repeat_ngram_size, processors=blockers,
            )
        else:
            output = self._generate_with_transformers(inputs, decode, use_cache, blockers)
        return [_until_eos(row, tokenizer.eos_token_id, tokenizer.bos_token_id)
                for row in output.tolist()]

    def _generate_with_transformers(
        self, inputs: torch.Tensor, decode: DecodeConfig, use_cache: bool,
        blockers: list[RepeatedClauseBlocker],
    ) -> torch.Tensor:
        """Decode with `transformers`' ``generate`` (beam search, the uncached loop); a lean
        generator lends its weights to a `transformers` BART built for the call."""
        from transformers import GenerationConfig, LogitsProcessorList

        bart = self.bart
        if isinstance(bart, LeanBart):
            bart = _transformers_bart(self._bart_config())
            bart.load_state_dict(self.bart.state_dict())
            bart = bart.to(inputs.device).eval()
        tokenizer = self.tokenizer
        generation = GenerationConfig(
            decoder_start_token_id=tokenizer.bos_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            do_sample=False,
            num_beams=decode.num_beams,
            length_penalty=decode.length_penalty,
            no_repeat_ngram_size=decode.no_repeat_ngram_size,
            repetition_penalty=decode.repetition_penalty,
            max_new_tokens=self.token_limit(decode),
            use_cache=use_cache,
            # Beam search stops once num_beams reports are finished (greedy has no such flag).
            **({"early_stopping": True} if decode.num_beams > 1 else {}),
        )
        attention = torch.ones(inputs.shape[:2], dtype=torch.long, device=inputs.device)
        return bart.generate(
            inputs_embeds=inputs, attention_mask=attention, generation_config=generation,
            logits_processor=LogitsProcessorList(blockers),
        )


def _transformers_bart(config: BartConfig) -> nn.Module:
    from transformers import BartForConditionalGeneration

    return BartForConditionalGeneration(config)


def _until_eos(ids: list[int], eos: int, bos: int) -> list[int]:
    """The report's tokens: after the start token, up to the first [EOS] (padding follows)."""
    ids = ids[1:] if ids and ids[0] == bos else ids
    return ids[:ids.index(eos)] if eos in ids else ids
