"""``python -m maskaudit`` (and ``torchrun -m maskaudit``) runs the command line."""

from .cli import main

main()
