"""Configuration of the report generator (MultiMedLM) and of how it decodes.

Saved as the ``config.json`` of a report-model checkpoint and validated on load, like the
alignment model's config, so an incompatible checkpoint is refused with a message.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from m3fm.validation import heads_divide_width, supported_version

GENERATOR_CONFIG_VERSION = 1
"""Version of the generator checkpoint format."""

Bridge = Literal["memory", "noise"]
RepeatedClauses = Literal["keep", "drop", "block"]
Precision = Literal["auto", "fp32", "bf16-images", "bf16"]

UNKNOWN_MODALITY = "unknown"
"""Name of the extra modality token a modality-conditioned generator has for reports whose
imaging domain is not among its `modalities` (text without one, or another data set's)."""


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DecodeConfig(_Config):
    """How reports are decoded from a point of the shared space."""

    bridge: Bridge = Field(
        "memory",
        description="How an image embedding crosses the modality gap: `memory` replaces it by "
        "a softmax-weighted mean of the training-text embeddings of the target language (the "
        "bank stored with the checkpoint); `noise` decodes it as it is, relying on the noise "
        "the generator was trained with.",
    )
    memory_temperature: float = Field(
        0.5, gt=0,
        description="Softmax temperature over cosine similarities to the bank: low picks the "
        "nearest training reports, high a consensus of many. 0.5 was best on COV-CTR val.",
    )
    num_beams: int = Field(1, ge=1, description="Beam width; 1 is greedy decoding.")
    length_penalty: float = Field(
        1.0, description="Beam scores are divided by length**length_penalty; >0 favours longer."
    )
    no_repeat_ngram_size: int = Field(
        0, ge=0, description="Never repeat an n-gram of this many tokens; 0 allows repeats."
    )
    repetition_penalty: float = Field(
        1.0, ge=1.0, allow_inf_nan=False,
        description="Logits of tokens already written are divided (or, when negative, "
        "multiplied) by this (the CTRL penalty, `transformers`' `repetition_penalty`); "
        "1 leaves them as they are.",
    )
    repeated_clauses: RepeatedClauses = Field(
        "drop",
        description="`drop` removes, after decoding, each clause or sentence that repeats an "
        "earlier one of the report (same text, case aside); `block` also keeps the decoder "
        "from finishing a clause it has already written (it bans the clause's last token), "
        "then drops what is left; `keep` leaves the report as decoded.",
    )
    max_new_tokens: int = Field(160, gt=0, description="Longest report, in tokens.")
    batch_size: int = Field(64, gt=0, description="Inputs decoded together.")
    precision: Precision = Field(
        "auto",
        description="Arithmetic of the image tower and the decoder: `fp32`; `bf16-images` "
        "(bfloat16 autocast in the image tower, the decoder in fp32); `bf16` (both in "
        "bfloat16: a greedy decoder then drifts from fp32 at near ties, corpus BLEU-4 97 "
        "against fp32 on COV-CTR); `auto`: `bf16-images` on a CPU with native bf16 (AMX or "
        "AVX512-BF16) or a CUDA device with bf16, `fp32` elsewhere (a CPU without them "
        "emulates bf16 far slower than fp32).",
    )


class GeneratorConfig(_Config):
    """A small BART-style encoder-decoder that writes a report from one embedding.

    The embedding becomes `prefix_tokens` encoder inputs, preceded by a learnt token for the
    target language and, when `modalities` is not empty, one for the imaging modality; the
    decoder writes the report token by token with the alignment model's vocabulary.  The
    paper's MultiMedLM is BERT-base-sized with 6 encoder and 3 decoder layers; the defaults
    are smaller so that it trains on a CPU.
    """

    config_version: int = Field(GENERATOR_CONFIG_VERSION, description="Checkpoint format.")
    languages: tuple[str, ...] = Field(
        min_length=1, description="Languages the generator writes (language plugin codes)."
    )
    modalities: tuple[str, ...] = Field(
        (),
        description="Imaging modalities the generator is conditioned on (modality plugin "
        "names): each gets a learnt encoder token after the language token, and reports "
        f"without one of these modalities get an extra `{UNKNOWN_MODALITY}` token.  Empty: "
        "no modality token (one style per language).",
    )
    prefix_tokens: int = Field(8, gt=0, description="Encoder positions made from the embedding.")
    hidden_size: int = Field(256, gt=0, description="Width of encoder and decoder.")
    encoder_layers: int = Field(2, gt=0, description="Transformer layers over the prefix.")
    decoder_layers: int = Field(3, gt=0, description="Transformer decoder layers.")
    num_heads: int = Field(4, gt=0, description="Attention heads.")
    intermediate_size: int = Field(1024, gt=0, description="Feed-forward width.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout in training.")
    max_length: int = Field(192, gt=8, description="Reports are truncated to this many tokens.")
    noise_std: float = Field(
        0.1, ge=0,
        description="Standard deviation of the Gaussian noise added to each (normalised) "
        "text embedding in training, so that nearby points (image embeddings) decode too.",
    )

    @field_validator("config_version")
    @classmethod
    def _supported_version(cls, version: int) -> int:
        return supported_version(version, GENERATOR_CONFIG_VERSION)

    @field_validator("modalities")
    @classmethod
    def _distinct_modalities(cls, modalities: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(modalities)) != len(modalities) or UNKNOWN_MODALITY in modalities:
            raise ValueError(
                f"modalities must be distinct and not {UNKNOWN_MODALITY!r}, got {modalities}"
            )
        return modalities

    @model_validator(mode="after")
    def _heads_divide_width(self) -> GeneratorConfig:
        heads_divide_width(self.hidden_size, self.num_heads)
        return self

    @property
    def conditioning_tokens(self) -> int:
        """Encoder positions before the embedding's: the language's, then the modality's."""
        return 2 if self.modalities else 1
