"""Diagnostics without fine-tuning: python analyze.py transfer experiment=img2img
(options: see xfer/analysis/cli.py or README.md)."""
from xfer.analysis.cli import main

if __name__ == "__main__":
    main()
