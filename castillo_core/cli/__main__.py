"""``python -m castillo_core.cli``: the ``castillo`` command (used by ``castillo install``)."""

from castillo_core.cli import main

if __name__ == "__main__":
    main()
