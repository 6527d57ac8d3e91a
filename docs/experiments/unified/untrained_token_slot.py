"""Issue 20, seventh pass: an untrained unified model with the Roman token slot (the romanizer's CTC transcript in
the LLM's own tokens; the projector's output starts at zero) over a romanizer, scored on the first dev utterances of
each seen language: what the LM alone makes of the romanizer's transcript before any training.

    OMP_NUM_THREADS=1 .venv/bin/python docs/experiments/unified/untrained_token_slot.py \
        --romanizer runs/unified-exp/romanizer-v310-aligned
"""

import argparse

import jiwer
import torch

from avalign.modeling import SpeechLLMForConditionalGeneration
from avalign.training import train_speech_llm
from avalign.training.data.splits import load_splits


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", default="runs/demo")
    parser.add_argument("--romanizer", default="runs/demo/asr/zeroshot-bn-aligned")
    parser.add_argument("--utterances", type=int, default=24)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = SpeechLLMForConditionalGeneration.from_romanizer(
        args.romanizer, f"{args.run}/text_lm", train_speech_llm.language_names(["hi", "bn", "ta", "en"]),
        speech_compression="ctc", projector_stride=1, roman_token_slot=True, constrain_to_script=True).eval()
    dev = load_splits(f"{args.run}/corpus", ["dev"])
    for language in ("hi", "ta", "en"):
        rows = dev.filter(lambda code: code == language, input_columns="language").select(range(args.utterances))
        out = train_speech_llm.transcribe(model, rows)
        score = jiwer.cer([r["reference"] for r in out], [r["hypothesis"] or " " for r in out])
        print(f"{language}: {100 * score:.1f} % CER; {out[0]['hypothesis']!r} for {out[0]['reference']!r}")


if __name__ == "__main__":
    main()
