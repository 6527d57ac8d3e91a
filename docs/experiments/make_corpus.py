"""The experiment corpus of docs/experiments.md: the embedded generator, 4 languages, the demo's sizes before dev_ood."""
import sys
import time

from avalign.training.corpus import synth

synth.PRESETS["exp"] = synth.SynthConfig("exp", unlabeled=1200, paired=900, train=300, dev=40, test=40, test_ood=40)
start = time.time()
synth.write_corpus(sys.argv[1], preset="exp", languages=("hi", "bn", "ta", "en"))
print("seconds", round(time.time() - start, 1))
