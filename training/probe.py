"""Where does a stage change the encoder? Linear probes on every frozen layer (the study's item 6).

For each layer output of a frozen encoder (0: the subsampling, k: block k):

- phonetic content: a linear CTC head trained on the fine-tuning fraction's clips for a fixed number of steps, scored
  by greedy-CTC CER on dev. A stage that overwrites phonetic information in its top layers raises their CER;
- image content: the layer's mean-pooled frames, a linear map into the teacher's image space fitted with InfoNCE on
  the paired pool, scored by audio -> image recall@1 among the held-out test images.

    probe_encoder(encoder_dir, corpus, tokenizer_dir, image_embeddings_dir) -> {"ctc_dev_cer": [..], "recall@1": [..]}

Hidden states are computed once per split (no gradient through the encoder), so a probe costs one pass over the
clips plus the training of small heads.
"""

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoTokenizer

from avalign.modeling import ctc_greedy_decode, load_encoder

from .data.batching import DurationBucketSampler, SpeechCollator
from .data.splits import feature_extractor, load_splits
from .evaluation.asr_error_rates import corpus_rate, utterance_edits
from .teacher import load_image_embeddings
from .train_asr import select_fraction

logger = logging.getLogger("avalign")


@torch.no_grad()
def layer_states(encoder, dataset, collator, max_seconds_per_batch: float = 60.0) -> dict:
    """Every layer's frames of every clip that decodes: {"frames": [L+1 lists of (T_i, D)], "rows": [dict]}."""
    frames, rows = None, []
    for indices in DurationBucketSampler(dataset["duration"], max_seconds_per_batch, shuffle=False):
        batch = collator([dataset[i] for i in indices])
        if batch is None:
            continue
        outputs = encoder(batch["input_features"], attention_mask=batch["attention_mask"], output_hidden_states=True)
        frames = frames or [[] for _ in outputs.hidden_states]
        for layer, states in enumerate(outputs.hidden_states):  # (B, T', D)
            frames[layer] += [row[:length].float() for row, length in zip(states, outputs.encoder_lengths)]
        keep = ("utterance_id", "transcript", "image_id", "language")
        rows += [{key: batch[key][i] for key in keep} for i in range(len(batch["utterance_id"]))]
    return {"frames": frames, "rows": rows}


def ctc_probe(train: dict, dev: dict, tokenizer, steps: int, batch_size: int = 32, seed: int = 0) -> list[float]:
    """Dev CER (greedy CTC) of a linear CTC head per layer, each trained on `train`'s frames for `steps` steps."""
    blank, vocab = tokenizer.pad_token_id, len(tokenizer)
    labels = [torch.tensor(ids) for ids in tokenizer([row["transcript"] for row in train["rows"]])["input_ids"]]
    generator = torch.Generator().manual_seed(seed)
    rates = []
    for layer_frames, dev_frames in zip(train["frames"], dev["frames"]):
        torch.manual_seed(seed)
        head = nn.Linear(layer_frames[0].shape[-1], vocab)
        optimizer = torch.optim.Adam(head.parameters(), lr=3e-3)
        for _ in range(steps):
            chosen = torch.randint(0, len(layer_frames), (batch_size,), generator=generator).tolist()
            states = nn.utils.rnn.pad_sequence([layer_frames[i] for i in chosen], batch_first=True)  # (B, T', D)
            log_probs = head(states).log_softmax(-1).transpose(0, 1)  # (T', B, V)
            loss = F.ctc_loss(log_probs, torch.cat([labels[i] for i in chosen]),
                              torch.tensor([len(layer_frames[i]) for i in chosen]),
                              torch.tensor([len(labels[i]) for i in chosen]), blank=blank, zero_infinity=True)  # fmt: skip
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        rates.append(ctc_dev_cer(head, dev_frames, dev["rows"], tokenizer))
    return rates


@torch.no_grad()
def ctc_dev_cer(head: nn.Module, frames: list[torch.Tensor], rows: list[dict], tokenizer) -> float:
    edits, lengths = [], []
    for states, row in zip(frames, rows):
        decoded = ctc_greedy_decode(head(states)[None], torch.tensor([len(states)]), tokenizer.pad_token_id)
        hypothesis = tokenizer.decode(decoded.sequences[0], group_tokens=False)
        edit, length = utterance_edits(row["transcript"], hypothesis, "cer")
        edits.append(edit)
        lengths.append(length)
    return corpus_rate(edits, lengths)


def retrieval_probe(paired: dict, test: dict, image_table, steps: int = 300, seed: int = 0) -> list[float]:
    """Audio -> image recall@1 among the test images, per layer, through a linear map fitted with InfoNCE."""
    train_images = F.normalize(image_table.lookup([row["image_id"] for row in paired["rows"]]), dim=-1)  # (N, E)
    gallery_ids = sorted({row["image_id"] for row in test["rows"]})
    gallery = F.normalize(image_table.lookup(gallery_ids), dim=-1)  # (I, E)
    truth = torch.tensor([gallery_ids.index(row["image_id"]) for row in test["rows"]])
    same_image = torch.tensor([[a["image_id"] == b["image_id"] for b in paired["rows"]] for a in paired["rows"]])
    targets = same_image.float() / same_image.sum(1, keepdim=True)
    recalls = []
    for train_frames, test_frames in zip(paired["frames"], test["frames"]):
        pooled = torch.stack([states.mean(0) for states in train_frames])  # (N, D)
        mean, std = pooled.mean(0), pooled.std(0) + 1e-5
        torch.manual_seed(seed)
        projection = nn.Linear(pooled.shape[-1], gallery.shape[-1])
        optimizer = torch.optim.Adam(projection.parameters(), lr=1e-2)
        for _ in range(steps):
            audio = F.normalize(projection((pooled - mean) / std), dim=-1)
            loss = F.cross_entropy(audio @ train_images.T / 0.07, targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            test_pooled = torch.stack([states.mean(0) for states in test_frames])
            scores = F.normalize(projection((test_pooled - mean) / std), dim=-1) @ gallery.T  # (N_test, I)
            recalls.append((scores.argmax(1) == truth).float().mean().item())
    return recalls


def probe_encoder(encoder_dir: Path, corpus: Path, tokenizer_dir: Path, image_embeddings_dir: Path,
                  fraction: float = 0.1, ctc_steps: int = 400, paired_rows: int = 1000, languages=None) -> dict:
    """Both probes for one encoder: {"layers": [0..L], "ctc_dev_cer": [...], "recall@1": [...], "chance"}."""
    encoder = load_encoder(encoder_dir)[0].eval()
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    collator = SpeechCollator(feature_extractor())
    split = lambda name: load_splits(str(corpus), [name], languages)  # noqa: E731
    paired = split("paired")
    paired = paired.select(range(min(paired_rows, len(paired))))
    states = {name: layer_states(encoder, dataset, collator) for name, dataset in
              (("train", select_fraction(split("train"), fraction)), ("dev", split("dev")), ("paired", paired),
               ("test", split("test")))}  # fmt: skip
    image_table = load_image_embeddings(image_embeddings_dir)
    result = {"layers": list(range(len(states["train"]["frames"]))),
              "ctc_dev_cer": ctc_probe(states["train"], states["dev"], tokenizer, ctc_steps),
              "recall@1": retrieval_probe(states["paired"], states["test"], image_table),
              "chance": 1 / len({row["image_id"] for row in states["test"]["rows"]})}  # fmt: skip
    logger.info("probe %s: CTC dev CER per layer %s, recall@1 per layer %s", encoder_dir,
                [round(r, 3) for r in result["ctc_dev_cer"]], [round(r, 3) for r in result["recall@1"]])  # fmt: skip
    return result
