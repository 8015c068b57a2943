"""Readers: one per source framework, each returning a framework-neutral `Stack`."""
