"""synthforge: synthetic post-training data and Constitutional AI.

Import what you need from its layers (``synthforge.teachers``, ``synthforge.stages``,
``synthforge.engine``, ``synthforge.constitution``); this module only names the version.
"""

__version__ = "0.1.0"
