"""Publishing: the ``publish`` verb (plain or encrypted artifact, merged or adapter-only for pretrained bases) and
the Hugging Face export."""
