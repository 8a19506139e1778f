"""Data: fetching, reading, validating, splitting and encoding click logs."""
