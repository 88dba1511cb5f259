"""`python -m ftlab.report`: the command lives in `ftlab.cli.report`."""

from ftlab.cli.report import main

if __name__ == "__main__":
    main()
