"""Batch compositing over a manifest as a Ray Data job (`python -m diorama.batch`).

manifest  rows (an id + NODE.INPUT values), their output names; pure
ledger    the output folder as the job's durable state: finished rows, attempts, quarantine, errors
worker    the Ray Data actor: one in-process ComfyUI executor per worker, one row at a time
job       the driver: pending rows → Ray Data actor pool → ledger, with a progress bar

Ray is an optional extra: nothing in the node pack imports this package.
"""
