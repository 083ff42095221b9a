"""Throughput benchmarks of adversarial evaluation and fine-tuning (not tests): `python -m benchmarks.run_all`."""
