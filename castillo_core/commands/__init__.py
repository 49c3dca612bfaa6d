"""Core subcommands beyond ``run``/``plugins``/``list``/``show``, one module each.

Each module defines ``command``, a click command; ``castillo_core.cli`` adds every
module found here. Modules import their heavy dependencies inside the command body so
that ``castillo --help`` stays fast.
"""
