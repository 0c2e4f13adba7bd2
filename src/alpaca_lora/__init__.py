"""alpaca-lora-pipeline: the code the step scripts (scripts/), the workflow (workflow/), the tests and the
benchmarks share. See docs/architecture.md for how the pieces fit together."""
