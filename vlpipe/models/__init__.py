"""ALBEF model: ViT image encoder, BERT text encoder, cross-attending fusion encoder, heads."""

from vlpipe.models.albef import (
    ALBEF,
    bert_key_to_vlpipe,
    build_model,
    count_parameters,
    load_text_weights,
    read_bert_state_dict,
    text_config_from_hf,
)
from vlpipe.models.fusion import FusionEncoder, FusionLayer
from vlpipe.models.heads import MLMHead
from vlpipe.models.text import TextEncoder
from vlpipe.models.vision import LoadReport, VisionEncoder, interpolate_pos_embed, load_vision_weights

__all__ = [
    "ALBEF",
    "FusionEncoder",
    "FusionLayer",
    "LoadReport",
    "MLMHead",
    "TextEncoder",
    "VisionEncoder",
    "bert_key_to_vlpipe",
    "build_model",
    "count_parameters",
    "interpolate_pos_embed",
    "load_text_weights",
    "load_vision_weights",
    "read_bert_state_dict",
    "text_config_from_hf",
]
