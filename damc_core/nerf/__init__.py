"""The talking-head NeRF: encodings, field, rendering, training."""
