"""`python -m ftlab.bench`: the command lives in `ftlab.cli.bench`."""

from ftlab.cli.bench import main

if __name__ == "__main__":
    main()
