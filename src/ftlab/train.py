"""`python -m ftlab.train`: the command lives in `ftlab.cli.train`."""

from ftlab.cli.train import main

if __name__ == "__main__":
    main()
