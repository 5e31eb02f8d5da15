"""Fuzz suites: seeded mutation of case files and plan files (see docs/robustness.md)."""
