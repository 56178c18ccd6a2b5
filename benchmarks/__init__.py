"""Speed, size and quality measurements; run each as `python -m benchmarks.NAME` from the checkout."""
