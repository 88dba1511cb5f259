"""The commands (`python -m ftlab.<command>`): thin Hydra/argparse entry points."""
