"""The DIN network and its parts.

- `network`          the model builder (`build_model`) and its history layouts (dense, compact, static capacity).
- `layers`           Dice, PReLU, Dropout, the dense stack and the DIN attention pooling.
- `segments`         row operations of the compact layouts.
- `history_capacity` the static layout's buffer size, measured on the data.
- `footprint`        the memory the weights need, estimated before anything is built (TF-free).
- `recompute`        the static layout's rare dense fallback, computed (and recomputed for its gradient) only
                     when needed.
"""
