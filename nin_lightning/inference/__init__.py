"""Use what a run trained: load, evaluate, predict, export (docs/using-models.md); imports nothing itself."""
