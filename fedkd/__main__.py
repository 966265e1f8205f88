"""``python -m fedkd`` = the ``fedkd`` command."""

from fedkd.cli import main

main()
