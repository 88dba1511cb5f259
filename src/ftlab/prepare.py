"""`python -m ftlab.prepare`: the command lives in `ftlab.cli.prepare`."""

from ftlab.cli.prepare import main

if __name__ == "__main__":
    main()
