"""Shared services below every package that uses them: atomic file and checkpoint writes."""
