"""Teachers: models that complete chat conversations.

The transformers backend is here; vLLM and OpenAI-compatible servers implement the same protocol."""

from synthforge.teachers.base import Completion, Conversation, Message, SamplingParams, Teacher

__all__ = ["Completion", "Conversation", "Message", "SamplingParams", "Teacher"]
