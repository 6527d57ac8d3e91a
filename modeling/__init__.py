"""avalign's model family. Importing it registers every config and model with the transformers Auto classes."""

from transformers import AutoConfig, AutoModel, AutoModelForCTC, AutoModelForPreTraining

from .configuration_fastconformer import (
    FASTCONFORMER_PRESETS,
    FastConformerAlignmentConfig,
    FastConformerConfig,
    FastConformerCTCTDTConfig,
    FastConformerMaskedTokenPredictionConfig,
)
from .loading import EncoderLoadReport, load_encoder
from .modeling_fastconformer import (
    FastConformerForCTCTDT,
    FastConformerForImageAlignment,
    FastConformerForMaskedTokenPrediction,
    FastConformerModel,
    TranscriptionOutput,
    ctc_greedy_decode,
    spec_augment,
    stack_frames,
)
from .configuration_speech_llm import SpeechLLMConfig
from .modeling_speech_llm import SpeechLLMForConditionalGeneration, load_llm
from .pipeline_fastconformer import FastConformerASRPipeline, word_spans
from .tdt_loss import fused_joint_tdt_loss, tdt_loss
from .tokenization_fastconformer import train_tokenizer, uncovered_characters

MODEL_FOR_CONFIG = {
    FastConformerConfig: FastConformerModel,
    FastConformerMaskedTokenPredictionConfig: FastConformerForMaskedTokenPrediction,
    FastConformerAlignmentConfig: FastConformerForImageAlignment,
    FastConformerCTCTDTConfig: FastConformerForCTCTDT,
}


def _register_auto_classes() -> None:
    for config_class, model_class in MODEL_FOR_CONFIG.items():
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, model_class, exist_ok=True)
        # save_pretrained then ships the modeling files as remote code and writes `auto_map`
        config_class.register_for_auto_class()
        model_class.register_for_auto_class("AutoModel")
    # the unified model loads its base LLM and LoRA adapter itself (peft): registered, not shipped as remote code
    AutoConfig.register(SpeechLLMConfig.model_type, SpeechLLMConfig, exist_ok=True)
    AutoModel.register(SpeechLLMConfig, SpeechLLMForConditionalGeneration, exist_ok=True)
    AutoModelForCTC.register(FastConformerCTCTDTConfig, FastConformerForCTCTDT, exist_ok=True)
    AutoModelForPreTraining.register(
        FastConformerMaskedTokenPredictionConfig, FastConformerForMaskedTokenPrediction, exist_ok=True
    )


_register_auto_classes()

__all__ = [
    "FASTCONFORMER_PRESETS",
    "FastConformerASRPipeline",
    "EncoderLoadReport",
    "FastConformerAlignmentConfig",
    "FastConformerConfig",
    "FastConformerCTCTDTConfig",
    "FastConformerForCTCTDT",
    "FastConformerForImageAlignment",
    "FastConformerForMaskedTokenPrediction",
    "FastConformerMaskedTokenPredictionConfig",
    "FastConformerModel",
    "SpeechLLMConfig",
    "SpeechLLMForConditionalGeneration",
    "TranscriptionOutput",
    "ctc_greedy_decode",
    "spec_augment",
    "fused_joint_tdt_loss",
    "load_encoder",
    "load_llm",
    "tdt_loss",
    "train_tokenizer",
    "uncovered_characters",
    "word_spans",
]
