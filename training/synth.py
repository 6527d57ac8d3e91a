"""The command line of the embedded corpus generator (`avalign.training.corpus.synth`):

    python -m avalign.training.synth --preset {smoke,demo,full} --output-dir DIR [--languages hi bn] [--seed 0]
"""

from avalign.training.corpus.synth import main

if __name__ == "__main__":
    main()
