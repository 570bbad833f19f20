"""Import published constitution layouts into synthforge's model.

- Hugging Face's open CAI recipe (llm-swarm):
  ``{"constitutions": [{"critic", "revision"}], "system_chat": [[6, 10, … messages]]}`` (any number of rounds)
- Anthropic's ``CritiqueRevisionInstructions.json``: ``{"harmful0": {"prompt": [critique], "edit_request": revision}}``
- Anthropic's ``RLMadisonInstructions.json``: a list of comparison questions (judge-only principles)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from synthforge.constitution.model import Constitution, FewShotExample, Principle
from synthforge.constitution.parser import ConstitutionError
from synthforge.files import read_text
from synthforge.hashing import stable_hash

FEW_SHOT_ROLES = ["user", "assistant", "user", "assistant", "user", "assistant"]


def _text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def from_hf_recipe(data: dict[str, Any], name: str, source: str) -> Constitution:
    """Principles ``hf-01``… from ``constitutions``; few-shot examples from ``system_chat`` conversations."""
    principles = []
    if not isinstance(data["constitutions"], list):
        raise ConstitutionError(f"{source}: constitutions: expected a list of {{'critic', 'revision'}} objects")
    for i, item in enumerate(data["constitutions"], start=1):
        if not isinstance(item, dict) or not _text(item.get("critic")) or not _text(item.get("revision")):
            raise ConstitutionError(f"{source}: constitutions[{i - 1}] needs non-empty text in 'critic' and 'revision'")
        principles.append(Principle(name=f"principle-{i:02d}", critique=item["critic"], revision=item["revision"]))
    examples = []
    chats = data.get("system_chat") or []
    if not isinstance(chats, list):
        raise ConstitutionError(f"{source}: system_chat: expected a list of conversations")
    critiques = {p.critique.strip() for p in principles}
    for i, chat in enumerate(chats, start=1):
        messages = chat if isinstance(chat, list) and all(isinstance(m, dict) for m in chat) else []
        roles = [m.get("role") for m in messages]
        alternating = roles == [FEW_SHOT_ROLES[j % 2] for j in range(len(roles))]
        texts = [m.get("content") for m in messages]
        split = _rounds_start(texts, critiques) if alternating and all(_text(t) for t in texts) else None
        if split is None:
            raise ConstitutionError(
                f"{source}: system_chat[{i - 1}] must alternate user/assistant messages with text: a conversation "
                "(one or more user/assistant turns), then one or more rounds of critique request, critique, "
                "revision request, revision"
            )
        history = tuple((texts[j], texts[j + 1]) for j in range(0, split - 2, 2))
        rounds = tuple(tuple(texts[j : j + 4]) for j in range(split + 4, len(texts), 4))
        first = texts[split - 2 : split + 4]
        examples.append(FewShotExample(f"example-{i:02d}", *first, more_rounds=rounds, history=history))  # type: ignore[arg-type]
    return Constitution(name=name, principles=tuple(principles), examples=tuple(examples), sha256=stable_hash(data))


def _rounds_start(texts: list[str], critiques: set[str]) -> int | None:
    """Where an exchange's critique/revision rounds begin: after a conversation of 2k messages come rounds of 4.
    When several splits fit, the one whose first critique request is a principle's critique wins; else the one
    with the most rounds. None when no split fits."""
    splits = [d for d in range(2, len(texts) - 3, 2) if (len(texts) - d) % 4 == 0]
    if not splits:
        return None
    matching = [d for d in splits if texts[d].strip() in critiques]
    return (matching or splits)[0]


def from_anthropic(data: dict[str, Any], name: str, source: str) -> Constitution:
    """One principle per key; the critique is the first of its ``prompt`` list."""
    principles = []
    for key, item in data.items():
        prompt = item.get("prompt") if isinstance(item, dict) else None
        critique = prompt[0] if isinstance(prompt, list) and prompt else prompt
        if not _text(critique) or not _text(item.get("edit_request")):
            raise ConstitutionError(f"{source}: {key}: expected {{'prompt': [critique], 'edit_request': revision}}")
        principles.append(
            Principle(name=key.replace(" ", "-"), critique=critique.strip(), revision=item["edit_request"].strip())
        )
    return Constitution(name=name, principles=tuple(principles), sha256=stable_hash(data))


def from_compare_list(data: list[Any], name: str, source: str) -> Constitution:
    """Anthropic's ``RLMadisonInstructions.json``: comparison questions for the RL-CAI judge, one principle each."""
    principles = []
    for i, question in enumerate(data, start=1):
        if not _text(question):
            raise ConstitutionError(f"{source}: [{i - 1}]: expected a comparison question (non-empty text)")
        principles.append(Principle(name=f"compare-{i:02d}", critique="", revision="", compare=question.strip()))
    return Constitution(name=name, principles=tuple(principles), sha256=stable_hash(data))


def import_constitution(path: Path) -> Constitution:
    """Read a JSON constitution in any published layout (detected from its shape)."""
    try:
        data = json.loads(read_text(path, "constitution JSON"))
    except json.JSONDecodeError as exc:
        raise ConstitutionError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    if isinstance(data, dict) and "constitutions" in data:
        return from_hf_recipe(data, path.stem, str(path))
    if isinstance(data, list) and data:
        return from_compare_list(data, path.stem, str(path))
    if isinstance(data, dict) and data and all(isinstance(v, dict) and "edit_request" in v for v in data.values()):
        return from_anthropic(data, path.stem, str(path))
    raise ConstitutionError(
        f"{path}: unrecognised layout (expected Hugging Face's {{'constitutions': [...]}} or Anthropic's "
        "{'name': {'prompt': [...], 'edit_request': ...}})"
    )
