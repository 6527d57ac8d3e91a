"""Configuration of Zero-AVSR's unified model: a frozen FastConformer romanizer's frames, through a projector,
straight into a causal LM (LoRA) that writes the native script."""

from huggingface_hub.dataclasses import strict

from .configuration_fastconformer import _FastConformerHeadConfig

PROJECTOR_TYPES = ("stack", "conv")
PROJECTOR_ACTIVATIONS = ("gelu", "relu", "identity")
SPEECH_COMPRESSIONS = ("none", "ctc")
DEROMANIZATION_INSTRUCTION = "Write this romanized {language} sentence in {script} script."  # the LM cascade's too


@strict
class SpeechLLMConfig(_FastConformerHeadConfig):
    r"""The romanizer encoder (`encoder_config`, frozen), the projector, and the base LLM with its LoRA adapter.

    llm_name_or_path (`str`): the base causal LM: a Hub id, an absolute path, or a path relative to the model folder
        (`save_pretrained(..., include_llm=True)` writes it to `llm/`). Only the LoRA adapter is saved otherwise.
    llm_hidden_size (`int`): the LLM's embedding width (the projector's output).
    romanizer (`str`): the roman-target stage-3 folder the encoder came from (provenance).
    projector_type (`str`, defaults to `"stack"`): `"stack"` concatenates `projector_stride` frames (SLAM-LLM);
        `"conv"` is a strided Conv1d over them (Zero-AVSR: kernel = stride = 2).
    projector_stride (`int`, defaults to 2): encoder frames per LLM position (25 Hz -> 12.5 Hz for 2).
    speech_compression (`str`, defaults to `"none"`): `"ctc"` runs the romanizer's own CTC head (frozen, saved with
        the model) over the frames before the projector, drops the blank frames and averages each run of one Roman
        character into one frame (CTC compression, Gaido et al. 2021): about one position per character, as the LLM
        reads Roman text. `romanizer_vocab_size` and `romanizer_blank_token_id` size that head.
    roman_piece_slot (`bool`, defaults to False): with `"ctc"` compression and `projector_stride` 1, each position of
        the speech slot adds a trainable embedding of its CTC label (a piece of the romanizer's Roman vocabulary,
        initialised as the mean LLM embedding of the piece's text), and the text task's Roman text enters as the same
        pieces through the same table. Speech and text then share one slot form, and what the LLM learns from a
        language's Roman text alone reaches its speech. The projector's output starts at zero: an untrained slot
        reads as the romanizer's own CTC transcript.
    roman_token_slot (`bool`, defaults to False): with `"ctc"` compression and `projector_stride` 1, the speech slot is
        the romanizer's CTC transcript in the LLM's own tokens, each token plus the mean projected frames of the CTC
        pieces that spell it; the text task's Roman text enters as the LLM reads it. For a romanizer whose pieces are
        characters, which an LLM seldom reads one by one. The projector's output starts at zero: an untrained model
        is the LLM prompted with the romanizer's transcript (the LM cascade), and training adds what the frames hold.
    projector_hidden_size (`int`, defaults to 512): the MLP's hidden width.
    projector_activation (`str`, defaults to `"gelu"`): between the MLP's two layers (`"identity"`: Zero-AVSR's).
    lora_rank, lora_alpha, lora_dropout, lora_target_modules: the LoRA adapter (peft) on the LLM.
    load_in_4bit (`bool`, defaults to False): load the base LLM in 4-bit NF4 (QLoRA; needs bitsandbytes and a GPU).
    max_new_tokens (`int`, defaults to 100): the bound of `generate` (Zero-AVSR's).
    constrain_to_script (`bool`, defaults to False): `generate` writes only the characters of the row's script
        (`ScriptConstraint`: the language is given, so its script is too).
    instruction (`str`): the task, with `{language}` and `{script}` filled per row (the language is given); by default
        the LM cascade's, so that a text-only LM trained on the cascade's prompts has read it.
    languages (`dict`): {code: {"name": "Hindi", "script": "Devanagari"}}, the languages a prompt may name.
    """

    model_type = "avalign_speech_llm"
    llm_name_or_path: str = ""
    llm_hidden_size: int = 0
    romanizer: str = ""
    projector_type: str = "stack"
    projector_stride: int = 2
    projector_hidden_size: int = 512
    projector_activation: str = "gelu"
    speech_compression: str = "none"
    romanizer_vocab_size: int = 0
    romanizer_blank_token_id: int = 0
    roman_piece_slot: bool = False
    roman_token_slot: bool = False
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    load_in_4bit: bool = False
    max_new_tokens: int = 100
    constrain_to_script: bool = False
    instruction: str = DEROMANIZATION_INSTRUCTION
    languages: dict | None = None

    def __post_init__(self, **kwargs):
        self.lora_target_modules = list(self.lora_target_modules)
        self.languages = dict(self.languages or {})
        super().__post_init__(**kwargs)

    def validate_head(self):
        if self.projector_type not in PROJECTOR_TYPES:
            raise ValueError(f"projector_type must be one of {PROJECTOR_TYPES}, got {self.projector_type!r}")
        if self.projector_activation not in PROJECTOR_ACTIVATIONS:
            raise ValueError(f"projector_activation must be one of {PROJECTOR_ACTIVATIONS}, "
                             f"got {self.projector_activation!r}")  # fmt: skip
        if self.speech_compression not in SPEECH_COMPRESSIONS:
            raise ValueError(f"speech_compression must be one of {SPEECH_COMPRESSIONS}, got {self.speech_compression!r}")
        if self.speech_compression == "ctc" and not 0 <= self.romanizer_blank_token_id < self.romanizer_vocab_size:
            raise ValueError("speech_compression 'ctc' needs the romanizer's CTC head: romanizer_vocab_size "
                             f"{self.romanizer_vocab_size}, romanizer_blank_token_id {self.romanizer_blank_token_id}")
        for slot in ("roman_piece_slot", "roman_token_slot"):
            if getattr(self, slot) and (self.speech_compression != "ctc" or self.projector_stride != 1):
                raise ValueError(f"{slot} needs speech_compression 'ctc' and projector_stride 1 (one position per "
                                 f"CTC piece), got {self.speech_compression!r} and {self.projector_stride}")  # fmt: skip
        if self.roman_piece_slot and self.roman_token_slot:
            raise ValueError("roman_piece_slot and roman_token_slot are two forms of the slot: choose one")
        if min(self.projector_stride, self.projector_hidden_size, self.max_new_tokens) < 1 or self.lora_rank < 0:
            raise ValueError("projector_stride, projector_hidden_size and max_new_tokens must be >= 1, lora_rank >= 0")


__all__ = ["SpeechLLMConfig"]
