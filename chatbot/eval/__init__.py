"""Evaluation on the held-out chats: baselines (unigram/bigram/retrieval), reply metrics, the ``eval`` verb.

Imports only downwards (data, loading, generate); ``train`` and ``smoke`` use its metrics.
"""

from .runner import eval_command, evaluate

__all__ = ["eval_command", "evaluate"]
