"""Issue 20, seventh pass: tokens per character of the romanized seen-language transcripts (hi, ta, en; train split)
for a roman tokenizer of each size, beside the native one's. 258 ids are reserved (unk, 256 bytes, blank), so the
demo's 450 leaves 192 pieces: characters and a few merges over four native scripts, whole template words over one
Latin alphabet.

    .venv/bin/python docs/experiments/unified/roman_vocab.py [--run runs/demo]
"""

import argparse
import statistics

from avalign.modeling.tokenization_fastconformer import train_tokenizer
from avalign.training.data.splits import load_splits
from avalign.training.roman.romanize import with_targets


def tokens_per_character(tokenizer, texts) -> float:
    return round(statistics.mean(len(tokenizer(text)["input_ids"]) / len(text) for text in texts), 2)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", default="runs/demo")
    parser.add_argument("--sizes", nargs="+", type=int, default=[290, 310, 340, 380, 450])
    args = parser.parse_args()
    train = load_splits(f"{args.run}/corpus", ["train"])
    train = train.filter(lambda code: code in ("hi", "ta", "en"), input_columns="language")
    roman = with_targets(train, "roman", f"{args.run}/romanization.json")
    native = train_tokenizer(train["transcript"], vocab_size=450, shrink_to_fit=True)
    for code in ("hi", "ta", "en"):
        texts = [text for text, language in zip(train["transcript"], train["language"]) if language == code][:300]
        print(f"native 450 {code}: {tokens_per_character(native, texts)} tokens per character")
    for size in args.sizes:
        tokenizer = train_tokenizer(roman["transcript"], vocab_size=size, shrink_to_fit=True)
        rates = {code: tokens_per_character(tokenizer, [text for text, language in zip(roman["transcript"],
                 roman["language"]) if language == code][:300]) for code in ("hi", "ta", "en")}  # fmt: skip
        print(f"roman {size}: {rates} tokens per character; {tokenizer.tokenize(roman['transcript'][0])}")


if __name__ == "__main__":
    main()
