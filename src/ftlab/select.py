"""`python -m ftlab.select`: the command lives in `ftlab.cli.select`."""

from ftlab.cli.select import main

if __name__ == "__main__":
    main()
