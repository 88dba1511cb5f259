"""Registers ftlab's typed settings in Hydra's ConfigStore whenever Hydra starts (it imports every module in
the `hydra_plugins` namespace), so ftlab's configs compose from any entry point: the commands, tests,
notebooks, `hydra.compose`. Each YAML extends its settings under `/ftlab_schema/<group>/<name>`."""

import ftlab.cli.audit  # noqa: F401  (each import registers the command's settings)
import ftlab.cli.eval  # noqa: F401
import ftlab.cli.export  # noqa: F401
import ftlab.cli.predict  # noqa: F401
import ftlab.cli.select  # noqa: F401
import ftlab.cli.serve  # noqa: F401
import ftlab.training.settings  # noqa: F401  (every training group's settings)
