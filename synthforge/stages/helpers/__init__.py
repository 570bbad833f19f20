"""What several stages share but is no stage itself: the both-orders judging loop and juries (judging), how a
stage reports its own numbers (metrics), reading critiques and revisions out of a teacher's text
(critique_text, revision_text) and Self-Instruct's instruction rules (instruction_rules)."""
