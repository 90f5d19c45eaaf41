"""Shared pipeline plumbing: profiles, atomic file output, run records, reports."""
