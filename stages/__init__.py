"""One module per stage script: resolve settings -> inputs -> models / loop -> outputs, metrics, report."""
