"""``python -m celeriac ...`` runs the ``celeriac`` command."""

from __future__ import annotations

from celeriac.cli.main import main

if __name__ == "__main__":
    main(prog_name="python -m celeriac")
