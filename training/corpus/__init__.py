"""The embedded picture-prompted corpus generator: rendered scenes (`scenes`), native-script lexicons and
templates (`lexicons`), espeak-ng speech and the splits on disk with their card and statistics (`synth`).

Owns how the offline default corpus is made; imports `avalign.training.schema` (splits, languages) and
`avalign.training.data.audio` (resampling and the out-of-domain degradations it shares with augmentation).
"""
