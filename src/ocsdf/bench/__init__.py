"""Benchmarks: one module per study, each a function returning a table plus a CLI hook.

Each study module exposes ``register(subparsers)``, which adds its ``ocsdf bench NAME``
sub-command (with ``set_defaults(func=...)``; ``func(args) -> int``). Every study runs in the
one harness of :mod:`ocsdf.bench.harness` (splits, device and threads, command line, parallel
jobs) and writes its table with :mod:`ocsdf.bench.report`.
"""
