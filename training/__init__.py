"""Training the parts that have no published weights (IMPRINT, Neural Assets, person insertion) and
building BIFRÖST's placement data: `python -m diorama.train RECIPE --config FILE.yaml`."""
