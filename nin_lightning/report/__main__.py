"""`python -m nin_lightning.report ...` (see `nin_lightning.report.cli`): errors as one line, as train.py's."""

from nin_lightning.cli.errors import one_line_errors
from nin_lightning.report.cli import main

raise SystemExit(one_line_errors(main))
