"""``python -m contrastlab`` (and ``torchrun -m contrastlab``) runs the CLI."""

from .cli import main

if __name__ == "__main__":
    main()
