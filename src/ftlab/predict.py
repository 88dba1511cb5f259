"""`python -m ftlab.predict`: the command lives in `ftlab.cli.predict`."""

from ftlab.cli.predict import main

if __name__ == "__main__":
    main()
