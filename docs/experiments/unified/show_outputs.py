"""Issue 20, fifth pass: a unified model's dev output beside its romanizer's CTC transcript and the reference, for a
few utterances of one language; or (--untrained) a fresh model with the given options, scored on the seen languages.

    OMP_NUM_THREADS=1 .venv/bin/python docs/experiments/unified/show_outputs.py --unified runs/unified-exp/X --language en
    OMP_NUM_THREADS=1 .venv/bin/python docs/experiments/unified/show_outputs.py --untrained --language en hi ta
"""

import argparse

import jiwer
import torch

from avalign.modeling import SpeechLLMForConditionalGeneration
from avalign.training import evaluate_asr, train_speech_llm
from avalign.training.data.splits import load_splits


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", default="runs/demo")
    parser.add_argument("--romanizer", default="runs/unified-exp/romanizer-steps800")
    parser.add_argument("--unified", help="a trained unified model folder")
    parser.add_argument("--untrained", action="store_true", help="a fresh piece-slot model over --romanizer instead")
    parser.add_argument("--language", nargs="+", default=["en"])
    parser.add_argument("--utterances", type=int, default=12)
    args = parser.parse_args()
    torch.manual_seed(0)
    dev = load_splits(f"{args.run}/corpus", ["dev"])
    if args.untrained:
        names = train_speech_llm.language_names(["hi", "bn", "ta", "en"])
        model = SpeechLLMForConditionalGeneration.from_romanizer(
            args.romanizer, f"{args.run}/text_lm", names, speech_compression="ctc", projector_stride=1,
            roman_piece_slot=True, constrain_to_script=True).eval()  # fmt: skip
    else:
        model = SpeechLLMForConditionalGeneration.from_pretrained(args.unified)
    romanizer = evaluate_asr.load_asr_model(args.romanizer)
    for code in args.language:
        rows = dev.select([i for i, language in enumerate(dev["language"]) if language == code])
        rows = rows.shuffle(seed=0).select(range(min(args.utterances, len(rows))))
        outputs = train_speech_llm.transcribe(model, rows, constrain_to_script=True)
        ctc = {r["utterance_id"]: r["hypothesis"] for r in evaluate_asr.transcribe_dataset(*romanizer, rows, "ctc")}
        score = jiwer.cer([r["reference"] for r in outputs], [r["hypothesis"] or " " for r in outputs])
        print(f"{code}: unified CER {100 * score:.1f} % on {len(outputs)} dev utterances")
        for record in outputs[:6]:
            print(f"  reference {record['reference']}\n  CTC       {ctc[record['utterance_id']]}\n"
                  f"  unified   {record['hypothesis']}\n")


if __name__ == "__main__":
    main()
