"""``python -m probes.reasoner_circuit``: run the study and write its tables and report."""

from probes.reasoner_circuit.report import main

main()
