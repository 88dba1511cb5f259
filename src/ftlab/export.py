"""`python -m ftlab.export`: the command lives in `ftlab.cli.export`."""

from ftlab.cli.export import main

if __name__ == "__main__":
    main()
