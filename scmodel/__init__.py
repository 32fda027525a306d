"""sczarr's training backend: datasets over the store, tokenizers, diffusion models."""
