"""Layer 4 — reading and writing checkpoints and weight files (npz, npy, safetensors)."""
