"""Encoder forward + backward FLOPs per audio-second at the demo and Small sizes, 4x subsampling (full preset)."""
import torch
from torch.utils.flop_counter import FlopCounterMode

from avalign.modeling import FastConformerConfig, FastConformerModel

for preset in ("demo", "small"):
    config = FastConformerConfig.from_preset(preset, subsampling_factor=4)
    model = FastConformerModel(config).train()
    features, mask = torch.randn(6, 1000, config.num_mel_bins), torch.ones(6, 1000, dtype=torch.bool)  # 6 x 10 s
    with FlopCounterMode(display=False) as counter:
        model(features, mask).last_hidden_state.sum().backward()
    parameters = sum(p.numel() for p in model.parameters()) / 1e6
    print(preset, f"{parameters:.1f} M parameters", f"{counter.get_total_flops() / 60 / 1e9:.1f} GFLOP per audio-second")
