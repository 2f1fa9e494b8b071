"""Evaluation on the held-out chats: baselines (unigram/bigram/retrieval), reply metrics, the ``eval`` verb.

Imports only downwards (data, infer); the trainer runs its TrainingProbe, ``smoke`` (smoke.py) its metrics.
"""

from .runner import eval_command, evaluate

__all__ = ["eval_command", "evaluate"]
