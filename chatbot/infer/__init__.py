"""Inference: loading a model from an artifact or a checkpoint, the prompt, sampling, the cached decode loop, the
streamed text, the bot's persona and the group-room speaker slots, and the interactive ``chat`` verb."""
