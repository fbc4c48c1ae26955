"""Top-level ``ocsdf`` sub-commands that live in their own module.

Each module ``ocsdf.commands.NAME`` defines ``register(subparsers)``, which adds the
sub-command to the parser built by :func:`ocsdf.cli.build_parser` (see
``ocsdf.cli.COMMAND_MODULES``). User errors are raised as :class:`ocsdf.errors.InputError`
(or ``ValueError``/``OSError``) and printed by ``ocsdf.cli.main`` as one line.
"""
