"""Reading and batching: audio decoding, resampling and degradations (`audio`), loaders that bring the embedded
corpus, Vaani, FLEURS and a user's folder into the common schema (`loaders`), validation with counted skips,
duration-bucket sampling and the collators (`batching`), and what every stage script reads first (`splits`).

Owns the data path from a file or a Hub dataset to a padded batch; imports only `avalign.training.schema` (and,
for tokenizer coverage, `avalign.modeling`).
"""
