"""`python -m ftlab.audit`: the command lives in `ftlab.cli.audit`."""

from ftlab.cli.audit import main

if __name__ == "__main__":
    main()
