"""showq: lists the mail queue for postqueue -p/-j and mailq (see service.py)."""
