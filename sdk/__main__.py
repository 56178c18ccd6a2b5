"""`python -m sdk` runs the `tandem` command line."""

from sdk.cli import main

main()
