"""`python -m ftlab.eval`: the command lives in `ftlab.cli.eval`."""

from ftlab.cli.eval import main

if __name__ == "__main__":
    main()
