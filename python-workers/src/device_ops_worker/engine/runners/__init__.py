"""One runner per task: its parameter checks, how its jobs queue and batch,
and what it does on the device thread. ``registry`` maps tasks to them."""
