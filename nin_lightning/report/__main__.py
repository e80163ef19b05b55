"""`python -m nin_lightning.report ...`: see `nin_lightning.report.cli`."""

from nin_lightning.report.cli import main

raise SystemExit(main())
