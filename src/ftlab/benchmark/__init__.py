"""`ftlab.bench`'s measurements: training loops (ftlab vs hand-written), the feature cache (end to end and
steady state), and the main job run end to end on stand-in assets. The CLI in `ftlab.cli.bench` is thin."""
