"""dev_ood without noise, without reverberation, and without both (the generator with a degradation switched off),
added to a copy of the corpus as dev_ood_clean / dev_ood_noise / dev_ood_reverb (finding 10)."""
import os

from datasets import Dataset, DatasetDict, load_from_disk

from avalign.training.corpus import synth

corpus, output = os.environ.get("CORPUS", "runs/demo/corpus"), os.path.join(os.environ.get("EXP", "runs/exp"), "ood")
keep = lambda samples, rng, setting: samples  # noqa: E731  the identity in place of a degradation
variants = {"clean": (keep, keep), "noise": (synth.add_noise, keep), "reverb": (keep, synth.reverberate)}
splits = {}
for name, (noise, reverb) in variants.items():
    synth.add_noise, synth.reverberate = noise, reverb
    rows = [row for language in ("hi", "bn", "ta", "en")
            for row in synth.generate_block("dev_ood", language, synth.PRESETS["demo"], 0)]  # fmt: skip
    splits[f"dev_ood_{name}"] = Dataset.from_list(rows, features=synth.FEATURES).cast_column("audio", synth.AUDIO)
DatasetDict({**load_from_disk(corpus), **splits}).save_to_disk(output)
print(output)
