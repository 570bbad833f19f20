"""Evaluation: judged comparisons of models on held-out prompts (``synthforge eval compare``), built on the engine."""
