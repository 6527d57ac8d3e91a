"""Zero-AVSR's unified model: speech straight into a causal LM that writes the native script.

    romanizer encoder (frozen, a roman-target stage-3 model's) -> projector (frame stacking or a strided conv, MLP)
        -> any `AutoModelForCausalLM`, LoRA through peft -> native-script text

Each row of a batch is one prompt, `[prompt prefix] + [speech embeddings] + [prompt suffix] + [target + EOS]`, with
the loss on the target only. The prompt names the language (given, not predicted) and goes through the LLM
tokenizer's chat template where it has one. The speech slot can hold the tokens of a Roman-script text instead
(Zero-AVSR's second task: Roman text -> native script, which is how a language whose speech is never heard is
learnt). Rows are left-padded, so that training and generation assemble inputs alike.

    model = SpeechLLMForConditionalGeneration.from_romanizer("runs/demo/asr/zeroshot-bn-aligned", "Qwen/Qwen3-0.6B")
    model.generate(audio=[samples], languages=["bn"])            # -> ["native-script text"]
    model.save_pretrained("out")                                 # encoder + projector, LoRA adapter, names the LLM
    SpeechLLMForConditionalGeneration.from_pretrained("out")     # resolves the base LLM by id or path

Shapes: B batch, T feature frames (10 ms), T' encoder frames, N LLM positions of speech (T' / stride), D encoder
width, H LLM width, L assembled sequence length.
"""

import copy
import importlib.util
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (AutoConfig, AutoFeatureExtractor, AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList,
                          PreTrainedModel)
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.parakeet.modeling_parakeet import ParakeetEncoderCTCHead

from .configuration_speech_llm import SpeechLLMConfig
from .loading import load_encoder
from .modeling_fastconformer import FastConformerForCTCTDT, FastConformerModel, stack_frames
from .script_constraint import ScriptConstraint

SPEECH_SLOT = "<|speech|>"  # where the speech embeddings (or a Roman text's tokens) go in the prompt
WEIGHTS_FILE, ADAPTER_FOLDER, LLM_FOLDER = "model.safetensors", "adapter", "llm"
PIECES_FOLDER = "romanizer_tokenizer"  # the Roman pieces of `roman_piece_slot` and `roman_token_slot`
# what model.safetensors holds (never the LLM's weights)
TRAINED_PREFIXES = ("encoder.", "ctc_head.", "projector.", "piece_embeddings.")
IGNORE_INDEX = -100
ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "identity": nn.Identity}


class SpeechProjector(nn.Module):
    """(B, T', D) encoder frames -> (B, N, H) LLM input embeddings, N = ceil(T' / stride)."""

    def __init__(self, config: SpeechLLMConfig):
        super().__init__()
        width, stride = config.encoder_config.hidden_size, config.projector_stride
        self.stride, self.type = stride, config.projector_type
        self.conv = nn.Conv1d(width, width, kernel_size=stride, stride=stride) if self.type == "conv" else None
        self.mlp = nn.Sequential(
            nn.Linear(width if self.conv else width * stride, config.projector_hidden_size),
            ACTIVATIONS[config.projector_activation](),
            nn.Linear(config.projector_hidden_size, config.llm_hidden_size),
        )

    def output_lengths(self, encoder_lengths: torch.Tensor) -> torch.Tensor:
        return (encoder_lengths + self.stride - 1) // self.stride

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        num_positions = -(-frames.shape[1] // self.stride)
        if self.conv is None:
            return self.mlp(stack_frames(frames, self.stride, num_positions))  # (B, N, stride * D) -> (B, N, H)
        padded = nn.functional.pad(frames, (0, 0, 0, num_positions * self.stride - frames.shape[1]))
        return self.mlp(self.conv(padded.transpose(1, 2)).transpose(1, 2))  # (B, N, D) -> (B, N, H)


def ctc_compress(frames: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor, blank: int):
    """CTC compression: (B, T', D) frames, (B,) lengths and (B, T') per-frame CTC labels -> (B, N', D) frames, (B,)
    lengths and (B, N') the label of each: blank frames dropped, each run of one label averaged into one frame
    ("a a _ a b" -> a, a, b). An utterance with no label at all keeps the mean of its frames (labelled blank), so
    that no slot is empty."""
    time = torch.arange(frames.shape[1], device=frames.device)
    valid = time[None, :] < lengths[:, None]  # (B, T')
    keep = valid & (labels != blank)
    keep |= valid & ~keep.any(dim=1, keepdim=True)  # all blank: one run of every frame
    previous_kept = nn.functional.pad(keep[:, :-1], (1, 0))
    previous_label = nn.functional.pad(labels[:, :-1], (1, 0), value=-1)
    starts = keep & (~previous_kept | (labels != previous_label))  # (B, T'): a new run begins here
    runs = (starts.cumsum(dim=1) - 1).clamp(min=0)  # (B, T'): each frame's run (meaningless where not kept)
    weights = keep.to(torch.float32)
    sums = torch.zeros(frames.shape, dtype=torch.float32, device=frames.device).scatter_add_(
        1, runs[..., None].expand_as(frames), frames.float() * weights[..., None])  # fmt: skip
    counts = torch.zeros(weights.shape, device=frames.device).scatter_add_(1, runs, weights)
    compressed_lengths = starts.sum(dim=1)
    width = int(compressed_lengths.max())
    means = sums[:, :width] / counts[:, :width, None].clamp(min=1.0)
    run_labels = torch.full((frames.shape[0], width + 1), blank, dtype=labels.dtype, device=labels.device)
    run_labels.scatter_(1, runs.masked_fill(~starts, width), labels)  # each run's first frame writes its label
    return means.to(frames.dtype), compressed_lengths, run_labels[:, :width]


def reads_pieces(config: SpeechLLMConfig) -> bool:
    """Whether the model needs the romanizer's tokenizer (the texts of its Roman pieces)."""
    return config.roman_piece_slot or config.roman_token_slot


def load_llm(name_or_path: str | Path, load_in_4bit: bool = False):
    """(causal LM, tokenizer) by Hub id or path, with a clear error when it cannot be loaded; 4-bit NF4 (QLoRA)
    only where bitsandbytes and a CUDA GPU exist."""
    quantization = {}
    if load_in_4bit:
        if not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None:
            raise ValueError("load_in_4bit needs a CUDA GPU and bitsandbytes; load the LLM unquantized here")
        from transformers import BitsAndBytesConfig

        quantization = {"quantization_config": BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)}  # fmt: skip
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        llm = AutoModelForCausalLM.from_pretrained(name_or_path, **quantization)
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"the base LLM {str(name_or_path)!r} cannot be loaded as a causal LM: {error}") from error
    if tokenizer.pad_token_id is None:  # rows are left-padded and masked: any id will do
        tokenizer.pad_token = tokenizer.eos_token
    return llm, tokenizer


def with_lora(llm, config: SpeechLLMConfig):
    """The LLM with a fresh LoRA adapter (rank 0: the LLM stays frozen and only the projector trains)."""
    if not config.lora_rank:
        return llm.requires_grad_(False)
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if config.load_in_4bit:
        llm = prepare_model_for_kbit_training(llm)
    lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=config.lora_target_modules, task_type="CAUSAL_LM")  # fmt: skip
    return get_peft_model(llm, lora)


class SpeechLLMForConditionalGeneration(PreTrainedModel):
    """The frozen romanizer encoder, the projector and a causal LM (with LoRA): speech (or Roman text) in a prompt
    naming its language -> that language's native script."""

    config: SpeechLLMConfig
    config_class = SpeechLLMConfig
    main_input_name = "input_features"

    def __init__(self, config: SpeechLLMConfig, llm=None, tokenizer=None, feature_extractor=None,
                 romanizer_tokenizer=None):  # fmt: skip
        super().__init__(config)
        self.encoder = FastConformerModel(config.encoder_config).requires_grad_(False)
        self.ctc_head = None  # the romanizer's own, frozen: labels the frames that CTC compression keeps
        if config.speech_compression == "ctc":
            width = config.encoder_config.hidden_size
            self.ctc_head = ParakeetEncoderCTCHead(width, config.romanizer_vocab_size, kernel_size=1).requires_grad_(False)
        self.projector = SpeechProjector(config)
        self.piece_embeddings = None  # roman_piece_slot: (romanizer vocabulary, H), shared by speech and Roman text
        if config.roman_piece_slot:
            self.piece_embeddings = nn.Embedding(config.romanizer_vocab_size, config.llm_hidden_size)
        self.post_init()
        self.llm, self.tokenizer, self.feature_extractor = llm, tokenizer, feature_extractor  # after post_init:
        # the LLM keeps its own weights
        self.romanizer_tokenizer = romanizer_tokenizer  # the Roman pieces' texts (roman_piece_slot, roman_token_slot)
        self.train(self.training)  # the frozen romanizer in eval mode from the start, not only once training begins

    # -------------------------------------------------------------------------------------------- building, loading
    @classmethod
    def from_romanizer(cls, romanizer: str | Path, llm_name_or_path: str | Path, languages: dict, **options):
        """A new model: the encoder of a roman-target stage-3 folder, a fresh projector, the LLM with a fresh LoRA.

        languages: {code: {"name": "Hindi", "script": "Devanagari"}}, the languages prompts may name."""
        romanizer_config = AutoConfig.from_pretrained(romanizer)
        if getattr(romanizer_config, "targets", None) != "roman":
            raise ValueError(f"{romanizer} is not a roman-target stage-3 model (targets="
                             f"{getattr(romanizer_config, 'targets', None)!r}); train one with --targets roman")  # fmt: skip
        encoder, _ = load_encoder(romanizer)
        llm, tokenizer = load_llm(llm_name_or_path, options.get("load_in_4bit", False))
        config = SpeechLLMConfig(encoder_config=encoder.config.to_dict(), llm_name_or_path=str(llm_name_or_path),
                                 llm_hidden_size=llm.config.hidden_size, romanizer=str(romanizer),
                                 romanizer_vocab_size=romanizer_config.vocab_size,
                                 romanizer_blank_token_id=romanizer_config.blank_token_id, languages=languages,
                                 **options)  # fmt: skip
        romanizer_tokenizer = AutoTokenizer.from_pretrained(romanizer) if reads_pieces(config) else None
        model = cls(config, with_lora(llm, config), tokenizer, AutoFeatureExtractor.from_pretrained(romanizer),
                    romanizer_tokenizer)  # fmt: skip
        model.encoder.load_state_dict(encoder.state_dict())
        if model.ctc_head is not None:
            model.ctc_head.load_state_dict(FastConformerForCTCTDT.from_pretrained(romanizer).ctc_head.state_dict())
        if model.piece_embeddings is not None:
            model.init_piece_slot()
        if reads_pieces(config):  # the projector's output at zero: an untrained slot is the romanizer's transcript
            nn.init.zeros_(model.projector.mlp[-1].weight)
            nn.init.zeros_(model.projector.mlp[-1].bias)
        return model

    @torch.no_grad()
    def init_piece_slot(self) -> None:
        """Each Roman piece's embedding starts as the mean LLM embedding of its text (special and byte pieces: zero):
        with the projector's output at zero, an untrained slot reads as the romanizer's CTC transcript, in words the
        LLM knows."""
        table, weight = self.llm.get_input_embeddings().weight, self.piece_embeddings.weight
        weight.zero_()
        special = set(self.romanizer_tokenizer.all_special_ids)
        pieces = self.romanizer_tokenizer.convert_ids_to_tokens(list(range(self.config.romanizer_vocab_size)))
        for piece_id, piece in enumerate(pieces):
            if piece and piece_id not in special and not piece.startswith("<0x"):
                ids = self.token_ids(piece.replace("\u2581", " "))  # SentencePiece's word start is a space
                if ids:
                    weight[piece_id] = table[ids].float().mean(dim=0).to(weight.dtype)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, llm_name_or_path=None, load_in_4bit=None,
                        config=None, **kwargs):  # fmt: skip
        """A saved model (folder or Hub id); the base LLM is `llm_name_or_path` if given, else the one the config
        names (a path relative to the folder, `llm/`, when it was saved with the model)."""
        folder = Path(pretrained_model_name_or_path)
        if not folder.is_dir():
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(str(pretrained_model_name_or_path)))
        config = config if isinstance(config, SpeechLLMConfig) else SpeechLLMConfig.from_pretrained(folder)
        if load_in_4bit is not None:
            config.load_in_4bit = load_in_4bit
        base = Path(llm_name_or_path or config.llm_name_or_path)
        if (folder / base).is_dir():  # saved with the model (llm/): named by its full path from here on
            base = folder / base
        config.llm_name_or_path = str(base)
        llm, _ = load_llm(base, config.load_in_4bit)
        if config.lora_rank:
            from peft import PeftModel

            llm = PeftModel.from_pretrained(llm, folder / ADAPTER_FOLDER)
        else:
            llm.requires_grad_(False)
        romanizer_tokenizer = AutoTokenizer.from_pretrained(folder / PIECES_FOLDER) if reads_pieces(config) else None
        model = cls(config, llm, AutoTokenizer.from_pretrained(folder), AutoFeatureExtractor.from_pretrained(folder),
                    romanizer_tokenizer)  # fmt: skip
        missing, unexpected = model.load_state_dict(load_file(folder / WEIGHTS_FILE), strict=False)
        missing = [key for key in missing if key.startswith(TRAINED_PREFIXES)]
        if missing or unexpected:
            raise ValueError(f"{folder / WEIGHTS_FILE}: missing {missing[:5]}, unexpected {unexpected[:5]}")
        return model.eval()

    def save_pretrained(self, save_directory, include_llm: bool = False, **kwargs) -> None:
        """config.json, model.safetensors (encoder + projector), adapter/ (LoRA), the LLM tokenizer and the feature
        extractor. The base LLM is named, not copied, unless `include_llm` (then its files go to llm/)."""
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        config = copy.deepcopy(self.config)
        if include_llm:
            source = Path(self.config.llm_name_or_path)
            if not source.is_dir():
                from huggingface_hub import snapshot_download

                source = Path(snapshot_download(self.config.llm_name_or_path))
            if source.resolve() != (folder / LLM_FOLDER).resolve():
                shutil.copytree(source, folder / LLM_FOLDER, dirs_exist_ok=True)
            config.llm_name_or_path = LLM_FOLDER
        config.save_pretrained(folder)
        weights = {key: value.detach().contiguous().cpu() for key, value in self.state_dict().items()
                   if key.startswith(TRAINED_PREFIXES)}  # fmt: skip
        save_file(weights, folder / WEIGHTS_FILE)
        if self.config.lora_rank:
            self.llm.save_pretrained(folder / ADAPTER_FOLDER)
        self.tokenizer.save_pretrained(folder)
        self.feature_extractor.save_pretrained(folder)
        if self.romanizer_tokenizer is not None:
            self.romanizer_tokenizer.save_pretrained(folder / PIECES_FOLDER)

    def train(self, mode: bool = True):
        """nn.Module's, but the frozen romanizer (encoder, CTC head) stays in eval mode: no dropout, no SpecAugment."""
        super().train(mode)
        for frozen in (self.encoder, self.ctc_head):
            if frozen is not None:
                frozen.eval()
        return self

    # -------------------------------------------------------------------------------------------- prompts
    def prompt_pieces(self, language: str) -> tuple[list[int], list[int]]:
        """Token ids before and after the speech slot of `language`'s prompt: the tokenizer's chat template, or,
        without one, the LM cascade's prompt ("<instruction>\n\nRoman: <slot>\n<Language>:", which the text-only LM
        has read) with the speech in the Roman text's place."""
        if language not in self.config.languages:
            raise ValueError(f"language {language!r} is not among the model's {sorted(self.config.languages)}")
        names = self.config.languages[language]
        instruction = self.config.instruction.format(language=names["name"], script=names["script"])
        if self.tokenizer.chat_template:
            messages = [{"role": "user", "content": f"{instruction}\n{SPEECH_SLOT}"}]
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            before, after = text.split(SPEECH_SLOT)
            return self.token_ids(before), self.token_ids(after)
        bos = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
        return bos + self.token_ids(f"{instruction}\n\nRoman:"), self.token_ids(f"\n{names['name']}:")

    def token_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    @property
    def text_prefix(self) -> str:
        """What goes in front of a Roman text in the slot, or a target: after "Roman:" / "<Language>:" in the plain
        prompt a word starts with its space, as the LM read it."""
        return "" if self.tokenizer.chat_template else " "

    def text_ids(self, text: str) -> list[int]:
        return self.token_ids(self.text_prefix + text)

    # -------------------------------------------------------------------------------------------- inputs
    def speech_embeddings(self, input_features=None, attention_mask=None, encoder_states=None,
                          encoder_lengths=None) -> list[torch.Tensor]:  # fmt: skip
        """(B, T, mel) log-mel features, or the frozen encoder's (B, T', D) outputs and (B,) lengths computed once
        beforehand -> B tensors (N_b, H): each utterance's projected frames, padding removed."""
        if encoder_states is None:
            with torch.no_grad():
                encoded = self.encoder(input_features, attention_mask=attention_mask)
            encoder_states, encoder_lengths = encoded.last_hidden_state, encoded.encoder_lengths
        if self.ctc_head is not None:
            with torch.no_grad():
                labels = self.ctc_head(encoder_states.to(self.ctc_head.weight.dtype)).argmax(dim=-1)  # (B, T')
            encoder_states, encoder_lengths, pieces = ctc_compress(encoder_states, encoder_lengths, labels,
                                                                   self.config.romanizer_blank_token_id)  # (B, N', D)
        frames = torch.arange(encoder_states.shape[1], device=encoder_states.device)
        padding = frames[None, :] >= encoder_lengths[:, None]  # (B, T')
        # padding zeroed: a stacked position that reads past an utterance's end is then alike in every batch
        embeddings = self.projector(encoder_states.masked_fill(padding[..., None], 0.0))  # (B, N, H)
        if self.piece_embeddings is not None:  # each position: its CTC piece, plus what the frames add to it
            embeddings = embeddings + self.piece_embeddings(pieces).to(embeddings.dtype)
        lengths = self.projector.output_lengths(encoder_lengths).tolist()
        if self.config.roman_token_slot:
            return [self.token_slot(row_pieces[:length], row[:length])
                    for row_pieces, row, length in zip(pieces, embeddings, lengths)]  # fmt: skip
        return [row[:length] for row, length in zip(embeddings, lengths)]

    def token_slot(self, pieces: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """(N',) CTC pieces and (N', H) their projected frames -> (n, H): the pieces' text in the LLM's tokens, each
        token's embedding plus the mean of the frames of the pieces that start in it (`roman_token_slot`). Special
        and byte pieces carry no text; their frames join the token that follows."""
        special = set(self.romanizer_tokenizer.all_special_tokens)
        text, starts = "", []  # starts: where each piece's first character is (or would be) in `text`
        for piece in self.romanizer_tokenizer.convert_ids_to_tokens(pieces.tolist()):
            piece = "" if piece in special or piece.startswith("<0x") else piece.replace("\u2581", " ")
            if not text or text.endswith(" "):
                piece = piece.lstrip(" ")  # one space between words, none in front
            starts.append(len(text) + len(piece) - len(piece.lstrip(" ")))
            text += piece
        prefix = self.text_prefix
        encoded = self.tokenizer(prefix + text.rstrip(" "), add_special_tokens=False, return_offsets_mapping=True)
        ids, spans = encoded["input_ids"], encoded["offset_mapping"]
        if not ids:  # nothing but blank: the frames' mean on an EOS, as `text_embeddings` writes an empty text
            ids, spans = [self.tokenizer.eos_token_id], [(0, len(prefix) + len(text) + 1)]
        begins, ends = torch.tensor(spans, device=frames.device).T[..., None]  # (n, 1) each
        anchors = torch.tensor(starts, device=frames.device) + len(prefix)  # (N',)
        weights = ((begins <= anchors) & (anchors < ends)).to(frames.dtype)  # (n, N'): the token each piece starts in
        weights = weights / weights.sum(dim=1, keepdim=True).clamp(min=1.0)
        embedded = self.llm.get_input_embeddings()(torch.tensor(ids, device=frames.device)).to(frames.dtype)
        return embedded + weights @ frames  # (n, H)

    def text_embeddings(self, texts: list[str]) -> list[torch.Tensor]:
        """Roman-script texts -> B tensors (n_b, H) of their token embeddings (the text task's speech slot); with
        `roman_piece_slot`, of their romanizer pieces."""
        if self.piece_embeddings is not None:
            blank = self.config.romanizer_blank_token_id
            return [self.piece_embeddings(torch.tensor(self.romanizer_tokenizer(text, add_special_tokens=False)
                                                       ["input_ids"] or [blank], device=self.device))
                    for text in texts]  # fmt: skip
        table = self.llm.get_input_embeddings()
        return [table(torch.tensor(self.text_ids(text) or [self.tokenizer.eos_token_id], device=self.device))
                for text in texts]  # fmt: skip

    def assemble(self, slots: list[torch.Tensor], languages: list[str], targets: list[str] | None = None) -> dict:
        """Left-padded `inputs_embeds` (B, L, H), `attention_mask` (B, L), `position_ids` (B, L) and, with
        targets, `labels` (B, L): IGNORE_INDEX everywhere but the target and its EOS."""
        table, rows = self.llm.get_input_embeddings(), []
        for row, (slot, language) in enumerate(zip(slots, languages)):
            before, after = self.prompt_pieces(language)
            target = [] if targets is None else self.text_ids(targets[row]) + [self.tokenizer.eos_token_id]
            ids = torch.tensor(before + after + target, dtype=torch.long, device=self.device)
            embedded = table(ids).to(slot.dtype)
            pieces = [embedded[: len(before)], slot, embedded[len(before) :]]
            labels = [IGNORE_INDEX] * (len(before) + len(slot) + len(after)) + target
            rows.append((torch.cat(pieces), labels))
        length = max(len(embeddings) for embeddings, _ in rows)
        inputs = torch.zeros(len(rows), length, rows[0][0].shape[-1], dtype=rows[0][0].dtype, device=self.device)
        attention_mask = torch.zeros(len(rows), length, dtype=torch.long, device=self.device)
        labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long, device=self.device)
        for row, (embeddings, row_labels) in enumerate(rows):
            start = length - len(embeddings)
            inputs[row, start:], attention_mask[row, start:] = embeddings, 1
            labels[row, start:] = torch.tensor(row_labels, device=self.device)
        batch = {"inputs_embeds": inputs, "attention_mask": attention_mask,
                 "position_ids": (attention_mask.cumsum(-1) - 1).clamp(min=0)}  # fmt: skip
        return batch | ({"labels": labels} if targets is not None else {})

    def slots(self, input_features=None, attention_mask=None, roman_texts=None, audio=None, encoder_states=None,
              encoder_lengths=None) -> list[torch.Tensor]:  # fmt: skip
        """The speech slot of each row: projected speech (features, raw 16 kHz `audio` arrays, or the encoder's
        outputs), or Roman text."""
        if audio is not None:
            input_features, attention_mask = self.features(audio)
        if sum(given is not None for given in (input_features, roman_texts, encoder_states)) != 1:
            raise ValueError("give speech (input_features, audio or encoder_states) or roman_texts, exactly one")
        if roman_texts is not None:
            return self.text_embeddings(list(roman_texts))
        if encoder_states is not None:
            return self.speech_embeddings(encoder_states=encoder_states.to(self.device),
                                          encoder_lengths=encoder_lengths.to(self.device))  # fmt: skip
        return self.speech_embeddings(input_features.to(self.device), attention_mask.to(self.device))

    def features(self, audio: list) -> tuple[torch.Tensor, torch.Tensor]:
        """16 kHz mono arrays -> (B, T, mel) log-mel features and (B, T) mask, through the romanizer's extractor."""
        arrays = [np.asarray(samples, dtype=np.float32).reshape(-1) for samples in audio]
        empty = [row for row, samples in enumerate(arrays) if samples.size == 0]
        if empty:
            raise ValueError(f"empty audio: the input(s) {empty} hold no samples")
        extracted = self.feature_extractor(arrays, sampling_rate=self.feature_extractor.sampling_rate,
                                           return_attention_mask=True, return_tensors="pt")  # fmt: skip
        return extracted["input_features"], extracted["attention_mask"]

    # -------------------------------------------------------------------------------------------- training, decoding
    def forward(self, input_features=None, attention_mask=None, roman_texts=None, languages=None, targets=None,
                encoder_states=None, encoder_lengths=None, **kwargs) -> CausalLMOutputWithPast:  # fmt: skip
        """The LM loss of `targets` (native-script texts) given speech (features or the encoder's outputs) or
        `roman_texts`, one language per row."""
        slots = self.slots(input_features, attention_mask, roman_texts, None, encoder_states, encoder_lengths)
        inputs = self.assemble(slots, list(languages), targets)
        return self.llm(**inputs, **kwargs)

    @torch.no_grad()
    def generate(self, input_features=None, attention_mask=None, languages=None, roman_texts=None, audio=None,
                 max_new_tokens: int | None = None, num_beams: int = 1,
                 constrain_to_script: bool | None = None) -> list[str]:  # fmt: skip
        """Native-script text of each row: speech (features or 16 kHz `audio` arrays) or `roman_texts`, and its
        language. At most `max_new_tokens` (the config's by default) tokens per row, up to the first newline; with
        `constrain_to_script` (the config's by default), only characters of the row's script (`ScriptConstraint`)."""
        languages = list(languages)
        slots = self.slots(input_features, attention_mask, roman_texts, audio)
        inputs = self.assemble(slots, languages)
        inputs.pop("position_ids")  # generate derives them from the mask, step by step
        constrain = self.config.constrain_to_script if constrain_to_script is None else constrain_to_script
        scripts = [self.config.languages[language]["script"] for language in languages]
        processors = [ScriptConstraint(self.tokenizer, scripts, 0, num_beams)] if constrain else []
        generated = self.llm.generate(
            **inputs, max_new_tokens=max_new_tokens or self.config.max_new_tokens, num_beams=num_beams,
            do_sample=False, eos_token_id=self.tokenizer.eos_token_id, pad_token_id=self.tokenizer.pad_token_id,
            logits_processor=LogitsProcessorList(processors), stop_strings=["\n"], tokenizer=self.tokenizer,
        )  # (B, new tokens): with inputs_embeds only, a decoder-only LM returns the new tokens alone
        texts = self.tokenizer.batch_decode(generated, skip_special_tokens=True)
        return [text.split("\n", 1)[0].strip() for text in texts]  # one transcript: one line, as the LM cascade's


__all__ = ["SpeechLLMForConditionalGeneration", "SpeechProjector", "ctc_compress", "load_llm"]
