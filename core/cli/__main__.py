"""`python -m m3fm.cli`, e.g. under torchrun."""

from m3fm.cli import main

if __name__ == "__main__":
    main()
