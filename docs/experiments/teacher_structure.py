"""What the teacher's image embeddings are made of: the share of their variance explained by each scene attribute
(group means of 600 paired images), from the image captions of EXP/corpus4 (finding 8). TEACHER_DIR as in run_align."""
import collections
import json
import os
import sys

import safetensors.torch
import torch

from avalign.training.data.splits import load_splits

teacher = sys.argv[1]
rows = load_splits(os.path.join(os.environ.get("EXP", "runs/exp"), "corpus4"), ["paired"])
captions = dict(zip(rows["image_id"], rows["image_caption"]))
manifest = json.load(open(f"{teacher}/image_embeddings/manifest.json"))
embeddings = next(iter(safetensors.torch.load_file(f"{teacher}/image_embeddings/embeddings.safetensors").values()))
ids = manifest.get("image_ids") or manifest.get("index")
order = sorted(ids, key=ids.get) if isinstance(ids, dict) else ids
chosen = [(image, order.index(image)) for image in captions if image in order][:600]
X = torch.nn.functional.normalize(embeddings[[row for _, row in chosen]].float(), dim=-1)  # (N, D)
text = [captions[image] for image, _ in chosen]  # "two red stars, on grey, at the left"


def explained(labels) -> float:
    groups = collections.defaultdict(list)
    for vector, label in zip(X, labels):
        groups[label].append(vector)
    mean = X.mean(0)
    between = sum(len(g) * ((torch.stack(g).mean(0) - mean) ** 2).sum() for g in groups.values())
    return (between / ((X - mean) ** 2).sum()).item()


objects = [caption.split(", ")[0] for caption in text]
print({"background": explained([caption.split(", ")[1] for caption in text]),
       "kind": explained([o.split()[2] for o in objects]), "colour": explained([o.split()[1] for o in objects]),
       "count": explained([o.split()[0] for o in objects]),
       "position": explained([caption.split(" ", 3)[-1].split(",")[0] for caption in text])})  # fmt: skip
