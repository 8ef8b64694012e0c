"""``python -m ultralbm_edge``: the same as the ``ultralbm-edge`` command."""

from ultralbm_edge.cli import main

main()
