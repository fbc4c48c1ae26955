"""Benchmarks: one module per study, each a function returning a table plus a CLI hook.

Each study module exposes ``register(subparsers)``, which adds its ``ocsdf bench NAME``
sub-command (with ``set_defaults(func=...)``; ``func(args) -> int``).
"""
