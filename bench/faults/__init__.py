"""Fault harness: every failure of the reliability issue, injected into a real stack, measured.

`python -m bench.faults` runs it (see `__main__`). The modules: `stack` (the processes a row runs
and their cleanup), `load` (producing with per-event acknowledgement, background queries),
`measure` (lost, duplicated, recovery), `row` (what a fault row gets and yields), the fault rows
by family (`process_faults`, `storage_faults`, `poison`), and `report` (table and JSON).
"""
