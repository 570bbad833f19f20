"""Read a critique: does it say the answer needs no change? (Then the revision round is skipped.)"""

from __future__ import annotations

import re

# Whole-critique verdicts such as "No issues." or "The response is already harmless and appropriate."
_NO_ISSUE = re.compile(
    r"""\b(?:
        no\s+(?:(?:significant|major|obvious|real|specific|apparent)\s+)?
            (?:issues?|problems?|concerns?|changes?|revisions?|improvements?|critiques?|criticisms?)
            \s+(?:are\s+|is\s+)?(?:found|needed|necessary|required|to\s+(?:report|make|fix|note|mention|suggest))
      | nothing\s+(?:to\s+(?:fix|change|improve|revise|critique|criticize|criticise)|(?:is\s+)?wrong)
      | (?:does|do)\s+not\s+(?:need|require)\s+(?:any\s+)?(?:changes?|revisions?|improvements?)
      | (?:doesn't|don't)\s+(?:need|require)\s+(?:any\s+)?(?:changes?|revisions?|improvements?)
      | (?:is|was)\s+already\s+(?:harmless|appropriate|helpful|honest|fine|good|safe|correct|ethical|acceptable)
      | there\s+(?:are|is)\s+no\s+(?:(?:significant|major|obvious|real|specific|apparent)\s+)?
            (?:issues?|problems?|concerns?|flaws?)
    )\b""",
    re.IGNORECASE | re.VERBOSE,
)
_ASKS_FOR_CHANGE = re.compile(r"\b(?:however|but|could be (?:improved|better)|would be better|instead|missing)\b", re.I)


def finds_no_issue(critique: str) -> bool:
    """True when the critique states the answer is fine and asks for nothing (short verdicts only).

    A critique that also says "however", "but", "instead"... is read as asking for a change.
    """
    text = critique.strip()
    if not text:
        return False
    return bool(_NO_ISSUE.search(text)) and not _ASKS_FOR_CHANGE.search(text)
