"""`python -m artpipe` is the `artpipe` command."""

from artpipe.cli import main

main()
