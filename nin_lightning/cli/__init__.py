"""What only the command line needs (nothing below imports it): one-line errors, Hydra entry, quiet console."""
