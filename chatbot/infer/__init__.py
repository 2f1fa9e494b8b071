"""Inference: loading a model from an artifact or a checkpoint (loading.py, loading_base.py), the prompt (prompt.py;
generate_base.py for a pretrained base), the bot's persona (persona.py) and the group-room speaker slots
(speakers.py), the token choice (sampling.py), the one cached decode loop (decode.py), the streamed text
(stream.py), the Responder every front end calls (responder.py), and the ``reply`` / ``chat`` verbs (chat.py)."""
