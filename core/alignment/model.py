"""MultiMedCLIP: image towers per modality and one text tower, projected into one space.

Image encoders come from the modality plugins' factories (looked up by name in the registry),
the text encoder from transformers.  A checkpoint is a Hugging Face-style directory:
``config.json`` (:class:`AlignModelConfig`), ``model.safetensors``, the tokenizer files and
``text_encoder/config.json`` (the transformers config, so the text tower is rebuilt without
fetching anything).  Loading runs no code from the checkpoint: see :mod:`m3fm.safe_loading`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from m3fm.alignment.config import AlignModelConfig
from m3fm.checkpoint import (
    CheckpointError,
    load_model_weights,
    read_json_object,
    save_model_file,
)
from m3fm.lean.bert import lean_bert
from m3fm.lean.tokenizer import lean_tokenizer
from m3fm.registry import EncoderOptions, InputError, get_registry
from m3fm.safe_loading import check_checkpoint_folder
from m3fm.tokenizer import load_tokenizer
from m3fm.validation import describe_validation_error

if TYPE_CHECKING:  # transformers' model code is imported only to build or train a model
    from transformers import PreTrainedTokenizerFast

    from m3fm.lean.tokenizer import LeanTokenizer

MAX_LOGIT_SCALE = 100.0
"""Upper bound of the learnt inverse temperature, as in CLIP and open_clip."""

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TEXT_ENCODER_DIR = "text_encoder"


class MultiMedCLIP(nn.Module):
    """Embeds images of every configured modality and reports of every language in one space."""

    def __init__(
        self, config: AlignModelConfig, tokenizer: PreTrainedTokenizerFast | LeanTokenizer,
        text_encoder: nn.Module | None = None, *, for_inference: bool = False,
    ) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        registry = get_registry()
        options = EncoderOptions(
            backbone=config.image.backbone,
            pretrained=config.image.pretrained,
            weights=config.image.weights,
            for_inference=for_inference,
        )
        owners = config.modalities[:1] if config.image.shared else config.modalities
        self.image_encoders = nn.ModuleDict(
            {name: registry.modality(name).build_encoder(options) for name in owners}
        )
        self.image_projections = nn.ModuleDict({
            name: nn.Linear(self._image_encoder(name).feature_dim, config.embed_dim, bias=False)
            for name in config.modalities
        })
        self.text_encoder = text_encoder or _new_text_encoder(config, tokenizer)
        self.text_projection = nn.Linear(
            self.text_encoder.config.hidden_size, config.embed_dim, bias=False
        )
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / config.init_temperature)))

    def _image_encoder(self, modality: str) -> nn.Module:
        key = self.config.modalities[0] if self.config.image.shared else modality
        return self.image_encoders[key]

    def image_features(self, modality: str, images: torch.Tensor) -> torch.Tensor:
        """The image tower's pooled features (B, F) of preprocessed images (B, C, [D,] H, W),
        before their projection into the shared space."""
        if modality not in self.image_projections:
            known = ", ".join(self.config.modalities)
            raise InputError(f"this model has no {modality!r} image tower; it has: {known}")
        images = resize_to_input(images, self.config.image.input_size)
        return self._image_encoder(modality)(images)

    def project_image(self, modality: str, features: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings of image-tower features (B, F)."""
        return F.normalize(self.image_projections[modality](features), dim=-1)

    def encode_image(self, modality: str, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings of a batch of preprocessed images (B, C, [D,] H, W)."""
        return self.project_image(modality, self.image_features(modality, images))

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings of tokenised reports: masked mean of the last hidden states."""
        hidden = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        return F.normalize(self.text_projection(pooled), dim=-1)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Token ids and attention mask for normalised reports, padded to the longest."""
        encoded = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.config.text.max_length,
            return_tensors="pt",
        )
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def forward(
        self, modality: str | None = None, images: torch.Tensor | None = None,
        **texts: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """Embed an image batch and any number of named token batches in one call.

        One entry point keeps DistributedDataParallel's gradient hooks on every tower.
        """
        out = {"logit_scale": self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)}
        if images is not None:
            out["image"] = self.encode_image(modality, images)
        for name, tokens in texts.items():
            out[name] = self.encode_text(**tokens)
        return out

    def save_config(self, path: Path) -> None:
        """Everything but the weights: config, tokenizer, text-encoder architecture."""
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_FILE).write_text(self.config.model_dump_json(indent=2))
        self.tokenizer.save_pretrained(path)
        self.text_encoder.config.save_pretrained(path / TEXT_ENCODER_DIR)

    def save_pretrained(self, path: str | Path) -> None:
        """Write a checkpoint directory that :meth:`from_pretrained` reads back."""
        path = Path(path)
        self.save_config(path)
        save_model_file(self, path / WEIGHTS_FILE)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, lean: bool = False) -> MultiMedCLIP:
        """Load a checkpoint directory; refuses incompatible or incomplete ones with one line.

        `lean`: for inference only, with the plain-torch towers and tokenizer of
        :mod:`m3fm.lean` where they cover the checkpoint (same weights and results, without
        importing transformers or timm); the model then cannot be trained further.
        """
        path = Path(path)
        for required in (CONFIG_FILE, WEIGHTS_FILE, TEXT_ENCODER_DIR):
            if not (path / required).exists():
                raise InputError(f"{path}: not an m3fm alignment checkpoint (no {required})")
        check_checkpoint_folder(path)
        try:
            config_text = (path / CONFIG_FILE).read_text(encoding="utf-8")
            config = AlignModelConfig.model_validate_json(config_text)
        except ValidationError as exc:
            problem = describe_validation_error(exc)
            raise InputError(f"{path / CONFIG_FILE}: incompatible config: {problem}") from exc
        # The weights file holds every parameter, so nothing pretrained is fetched again.
        config = config.model_copy(update={
            "image": config.image.model_copy(update={"pretrained": False, "weights": None}),
        })
        settings = read_json_object(path / TEXT_ENCODER_DIR / CONFIG_FILE)
        text_encoder = (lean and lean_bert(settings)) or _saved_text_encoder(settings, path)
        tokenizer = (lean and lean_tokenizer(path)) or load_tokenizer(path)
        model = cls(config, tokenizer, text_encoder=text_encoder, for_inference=lean)
        load_model_weights(model, path)
        return model.eval()


def resize_to_input(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """Resize the last two axes to size × size (anti-aliased), slices of volumes alike."""
    if size is None or images.shape[-2:] == (size, size):
        return images
    *leading, height, width = images.shape
    planes = images.reshape(-1, 1, height, width)
    planes = F.interpolate(planes, size=(size, size), mode="bilinear", antialias=True)
    return planes.reshape(*leading, size, size)


def _new_text_encoder(config: AlignModelConfig, tokenizer: PreTrainedTokenizerFast) -> nn.Module:
    from transformers import AutoModel, BertConfig

    text = config.text
    if text.pretrained:
        local = Path(text.pretrained).is_dir()
        if local:
            check_checkpoint_folder(Path(text.pretrained))
        return AutoModel.from_pretrained(
            text.pretrained, trust_remote_code=False, local_files_only=local, weights_only=True
        )
    # Built like a reloaded checkpoint (from_config, pooler included though unused), so that
    # saving and loading see the same parameters whatever the encoder.
    return AutoModel.from_config(
        BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=text.hidden_size,
            num_hidden_layers=text.num_layers,
            num_attention_heads=text.num_heads,
            intermediate_size=text.intermediate_size,
            hidden_dropout_prob=text.dropout,
            attention_probs_dropout_prob=text.dropout,
            max_position_embeddings=text.max_length,
            pad_token_id=tokenizer.pad_token_id,
        ),
        trust_remote_code=False,
    )


def _saved_text_encoder(settings: dict, checkpoint: Path) -> nn.Module:
    """The (untrained) text tower a checkpoint's saved text-encoder `settings` describe, built
    by transformers' own class for its ``model_type``: nothing the checkpoint names is
    imported."""
    from transformers import CONFIG_MAPPING, AutoModel

    model_type = settings.get("model_type")
    if model_type not in CONFIG_MAPPING:
        config_file = checkpoint / TEXT_ENCODER_DIR / CONFIG_FILE
        raise CheckpointError(
            f"{config_file}: model_type {model_type!r} is not a text model this version of "
            "transformers has; re-download the checkpoint or upgrade transformers"
        )
    config = CONFIG_MAPPING[model_type].from_dict(settings)
    return AutoModel.from_config(config, trust_remote_code=False)
