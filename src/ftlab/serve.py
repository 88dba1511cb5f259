"""`python -m ftlab.serve`: the command lives in `ftlab.cli.serve`."""

from ftlab.cli.serve import main

if __name__ == "__main__":
    main()
