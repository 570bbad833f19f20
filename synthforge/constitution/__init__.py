"""Constitutions: plain-text principle files users edit (``constitutions/*.txt``)."""

from synthforge.constitution.model import Constitution, FewShotExample, Principle
from synthforge.constitution.parser import load_constitution, parse_constitution

__all__ = ["Constitution", "FewShotExample", "Principle", "load_constitution", "parse_constitution"]
