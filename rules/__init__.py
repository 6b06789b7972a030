"""What to decide: the rule compiler (host), compiled tables and the evaluator
(portable), the anomaly model.  Kept import-free for MicroPython."""
