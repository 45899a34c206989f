"""Tasks: what a trainer or an evaluation needs to know about one kind of problem (the batch
format, the loss, the metrics). The trainer core (training) and evaluation of exported files
(deploy) both use them, and never each other, so tasks sit below both."""
