"""`python -m tandem` runs the `tandem` command line."""

from tandem.cli import main

main()
