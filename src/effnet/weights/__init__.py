"""Weights files: effnet's safetensors format with metadata, peers' checkpoints, pretrained
weights shipped by packages, and a trained file together with what it was trained on."""
