"""Simulated devices: a GV100 BAR0 in a memfd and an FSP behind the GH100 mailbox.

Product code (the demo, the benchmark) and tests use them alike, so they live outside
`mmiofilter.testing`.
"""
