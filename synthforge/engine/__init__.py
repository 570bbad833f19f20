"""The engine: pipeline specs, checkpointed stage execution, exports and provenance."""
