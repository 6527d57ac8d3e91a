"""avalign.training: data, the per-stage Accelerate scripts, evaluation, the pipeline driver and publishing.

At the top, what a user runs, and the loop the stage scripts share:

    pipeline.py                   the whole method as a list of stages (`make demo`)
    train_pretrain.py, train_align.py, train_asr.py      stages 1-3 (`accelerate launch training/train_*.py`)
    trainer.py                    the training loop, stage arguments, checkpoints and resume
    teacher.py                    stage 0: the vision teacher and its cached image embeddings
    evaluate_asr.py, publish.py   transcribe and score stage-3 models; push a run to the Hub
    synth.py                      the command line of the corpus generator
    schema.py, logs.py            the common schema (splits, languages, columns); logging setup

Subpackages, each owning one concern:

    corpus/       the embedded corpus generator: scenes, lexicons, speech synthesis
    data/         reading and batching: audio decoding and degradations, loaders into the schema, cleaning with
                  counted skips, duration buckets and collators
    evaluation/   scoring (the `evaluate` metric module, paired bootstrap) and the report (tables, plots)
    roman/        romanized targets (uroman) and the de-romanizer

Dependencies point one way: pipeline / tools -> stage scripts and trainer -> corpus, roman -> data, evaluation ->
schema. Nothing here is imported by avalign.modeling.
"""
