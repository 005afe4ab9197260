"""Corpus configs share the scoring layer's strict base (frozen, no unknown keys, ConfigError on bad values)."""

from scoring.strict import StrictModel, describe_validation_error

__all__ = ["StrictModel", "describe_validation_error"]
